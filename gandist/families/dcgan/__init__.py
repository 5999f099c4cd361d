"""The dcgan family."""
