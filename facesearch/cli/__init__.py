"""The Typer + Rich command line: thin wrappers over library functions."""
