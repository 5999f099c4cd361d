"""The pggan family."""
