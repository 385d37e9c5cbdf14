"""facesearch: learn, index, find and deduplicate faces in photo collections."""

__version__ = "0.1.0"
