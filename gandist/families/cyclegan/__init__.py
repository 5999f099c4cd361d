"""The cyclegan family."""
