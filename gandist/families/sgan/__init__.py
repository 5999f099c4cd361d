"""The sgan family."""
