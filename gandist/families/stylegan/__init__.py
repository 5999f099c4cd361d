"""The stylegan family."""
