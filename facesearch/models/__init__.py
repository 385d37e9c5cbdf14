"""Embedder models: the factory, weights I/O and preprocessing."""

from facesearch.models.config import EmbedderConfig
from facesearch.models.factory import Embedder, create_embedder
from facesearch.models.weights import load_weights, resolve_weights, save_weights

__all__ = ["EmbedderConfig", "Embedder", "create_embedder", "load_weights", "resolve_weights", "save_weights"]
