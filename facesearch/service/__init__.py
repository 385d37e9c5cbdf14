"""Stage 9, the local web service: the FastAPI app, its routes and the page it serves."""
