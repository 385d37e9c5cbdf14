"""The optional parts of an install: which extra brings which module, and the error that says so.

The default install (``pip install facesearch``) is what ``index``, ``query``, ``dedupe``,
``people``, ``serve``, ``watch`` and ``doctor`` need: the shipped networks run from their ONNX
exports. torch (~5 GB with its CUDA wheels) is the ``train`` extra: ``train``, ``distill``, a
model without an export and CUDA need it; matplotlib is ``plot`` (``evaluate --plot/--html``).
"""

from __future__ import annotations

import importlib
import importlib.util

from facesearch.core.errors import FacesearchError

__all__ = ["EXTRAS", "has_module", "missing_extra", "require"]

# The top-level module -> the extra of pyproject.toml that installs it.
EXTRAS = {"torch": "train", "torchvision": "train", "timm": "train", "matplotlib": "plot"}


def has_module(name: str) -> bool:
    """Whether ``name`` is installed, without importing it (torch costs ~2 s to import)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a blocked or half-removed package
        return False


def missing_extra(e: BaseException, what: str | None = None) -> FacesearchError | None:
    """The one-line error for an ImportError of a module an extra provides; None for any other."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    # An installed module that fails inside is a real bug, not a missing extra.
    if not isinstance(e, ImportError) or name not in EXTRAS or has_module(name):
        return None
    need = what or "this"
    return FacesearchError(f"{need} needs {name}, which the default install leaves out",
                           hint=f"pip install 'facesearch[{EXTRAS[name]}]'")


def require(name: str, what: str):
    """``import name``, or the one-line error naming its extra (``what``: what needs it)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise (missing_extra(e, what) or e) from e
