"""Stage 3, models: the embedder factory, weights I/O, preprocessing and the embedding engine.

Exports load lazily so that torch-free parts (``models.config``,
``models.weights_meta``) can be imported without paying for torch and timm.
"""

from importlib import import_module

_EXPORTS = {
    "EmbedderConfig": "facesearch.models.config",
    "Embedder": "facesearch.models.factory",
    "create_embedder": "facesearch.models.factory",
    "load_weights": "facesearch.models.weights",
    "resolve_weights": "facesearch.models.weights_meta",
    "save_weights": "facesearch.models.weights",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facesearch.models' has no attribute {name!r}")
