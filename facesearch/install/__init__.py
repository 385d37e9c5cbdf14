"""Checks and a tour of an install: ``facesearch doctor`` and ``make demo``."""
