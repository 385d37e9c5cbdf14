"""``facesearch doctor``: is this install ready to use? Plain checks that never raise.

Each check is ``{"name", "ok", "detail", "hint", "required"}``; a failed check
always carries a hint. Optional checks (GPU, alternative detectors) can fail
without making the install unhealthy.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Callable

from facesearch.core import modelfiles
from facesearch.core.errors import FacesearchError
from facesearch.core.extras import has_module

# The doctor's hint wherever torch is missing (train, distill, CUDA: README "Install").
TRAIN_HINT = "optional: pip install 'facesearch[train]' for train, distill and CUDA"

log = logging.getLogger(__name__)

MIN_PYTHON = (3, 10)
Outcome = tuple[bool, str, "str | None"]  # (ok, detail, hint)


def run_doctor(index_folder: Path | None = None, weights: str | None = None) -> dict:
    """Run every check; returns ``{"ok", "checks", "failed", "env", "summary"}``.

    ``ok`` is true when every *required* check passed. ``index_folder`` defaults
    to the default index (``facesearch.core.paths.resolve_index``), ``weights`` to the
    shipped default (``$FACESEARCH_WEIGHTS`` or ``weights/default.json``).
    """
    meta: dict = {}
    checks = [
        _check("python", _python),
        _check("torch", _torch, required=False),
        _check("cuda", _cuda, required=False),
        _check("precision", _precision),
        _check("faiss", _faiss),
        _check("faiss-gpu", _faiss_gpu, required=False),
        _check("detector yunet", _yunet),
        _check("detector dlib-hog", _dlib_hog),
        _check("landmarks dlib 5-point", lambda: _packaged("shape_predictor_5_face_landmarks.dat")),
        _check("detector dlib-cnn", lambda: _packaged("mmod_human_face_detector.dat"), required=False),
        _check("detector opencv-haar", _opencv_haar, required=False),
        _check("weights", lambda: _weights(weights, meta)),
        _check("index", lambda: _index(index_folder, meta)),
    ]
    failed = [c["name"] for c in checks if not c["ok"]]
    ok = all(c["ok"] for c in checks if c["required"])
    passed = len(checks) - len(failed)
    return {"ok": ok, "checks": checks, "failed": failed, "env": _env_summary(),
            "summary": f"{passed} of {len(checks)} checks passed" + ("" if ok else "; required checks failed")}


def _check(name: str, fn: Callable[[], Outcome], required: bool = True) -> dict:
    """Run one check; any exception becomes a failed check (doctor itself must never crash)."""
    try:
        ok, detail, hint = fn()
    except FacesearchError as e:
        ok, detail, hint = False, e.message, e.hint or "see the message above"
    except Exception as e:
        log.debug("doctor check %s failed", name, exc_info=True)
        ok, detail, hint = False, f"{type(e).__name__}: {e}", "reinstall with `pip install -e .` (see README)"
    if not ok and not hint:
        hint = "see the detail"
    return {"name": name, "ok": bool(ok), "detail": detail, "hint": hint, "required": required}


# ----------------------------------------------------------------------------- environment


def _python() -> Outcome:
    v = sys.version_info
    ok = v[:2] >= MIN_PYTHON
    hint = None if ok else f"facesearch needs Python >= {'.'.join(map(str, MIN_PYTHON))}"
    return ok, f"{platform.python_version()} ({sys.executable})", hint


def _torch() -> Outcome:
    """torch is the train extra: the default install runs the networks from their ONNX exports."""
    if not has_module("torch"):
        return True, "not installed: every command but train runs without it", TRAIN_HINT
    torch = _module("torch", TRAIN_HINT)
    return True, f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads", None


def _cuda() -> Outcome:
    """CUDA is optional: everything runs on the CPU, only slower."""
    if not has_module("torch"):
        return True, "not checked: torch is not installed", TRAIN_HINT
    torch = _module("torch", TRAIN_HINT)
    if not torch.cuda.is_available():
        return True, "not available: running on CPU", "optional: a CUDA GPU speeds up training and indexing"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return True, f"CUDA {torch.version.cuda}: {', '.join(names)}", None


def _precision() -> Outcome:
    """What runs the networks on the CPU and in what arithmetic ($FACESEARCH_RUNTIME and
    $FACESEARCH_PRECISION, else auto): a typo in either would otherwise stop the first index run."""
    from facesearch.core.precision import cpu_has_bf16, requested_precision
    from facesearch.core.runtime import choose_runtime, runtime_precision

    asked = requested_precision()
    parts = []
    for kind, what in (("detector", "detector"), ("embedder", "embedders")):
        runtime = choose_runtime(None, kind)
        parts.append(f"{what} on {runtime} in {runtime_precision(runtime, asked)}")
    native = "has native bf16" if cpu_has_bf16() else "no native bf16: fp32 is faster here"
    return True, f"{asked}: {', '.join(parts)} on the CPU ({native})", None


def _faiss() -> Outcome:
    faiss = _module("faiss", "pip install faiss-cpu")
    return True, f"faiss {getattr(faiss, '__version__', '?')}", None


def _faiss_gpu() -> Outcome:
    faiss = _module("faiss", "pip install faiss-cpu")
    n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if n > 0:
        return True, f"GPU FAISS with {n} GPU(s)", None
    if _cuda_available():  # a GPU is there but FAISS cannot use it: worth fixing
        return False, "CPU-only FAISS on a machine with CUDA", "pip install 'facesearch[gpu]' (faiss-gpu-cu12)"
    return True, "CPU FAISS (no GPU)", None


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _module(name: str, install_hint: str):
    try:
        return importlib.import_module(name)
    except Exception as e:  # ImportError, or a broken binary raising OSError
        raise FacesearchError(f"cannot import {name}: {e}", hint=install_hint) from e


# ----------------------------------------------------------------------------- detectors


def _dlib_hog() -> Outcome:
    dlib = _module("dlib", "pip install dlib-bin")
    version = f"dlib {getattr(dlib, '__version__', '?')}"
    path = modelfiles.hog_model_path()  # the file backends.hog_model reads, checksum checked
    if path is None:  # still works: dlib's compiled-in copy, only slower to load
        return True, f"{version}; weights/{modelfiles.HOG_FILE} missing or altered: the detector loads in " \
            "~0.5 s instead of ~2 ms", "run `python tools/export_hog.py` to write it again"
    return True, f"{version}, {path} (checksum ok)", None


def _packaged(filename: str) -> Outcome:
    path = modelfiles.dlib_model_path(filename)  # the very file detection loads
    return True, f"{path} ({path.stat().st_size / 1e6:.1f} MB)", None


def _opencv_haar() -> Outcome:
    cv2 = _module("cv2", "pip install opencv-python-headless")
    path = modelfiles.haar_cascade_path()  # the very file the opencv-haar detector loads
    if path is None:
        return False, f"OpenCV {cv2.__version__} has no CascadeClassifier or no {modelfiles.HAAR_FILE}", \
            "this OpenCV build ships no Haar cascade files; use --detector dlib-hog or auto"
    return True, f"OpenCV {cv2.__version__}, {path}", None


# ----------------------------------------------------------------------------- weights and index


def _yunet() -> Outcome:
    """What detection will load: the ONNX export on the runtime (no torch), else the torch module."""
    from facesearch.faces.yunet_runtime import find_yunet_weights, open_network

    if open_network() is None:  # checks the export against the recorded sha256 when there is one
        from facesearch.faces.yunet import load_yunet

        load_yunet()  # checks the recorded sha256
    return True, f"{find_yunet_weights()[0]} (checksum ok)", None


def _weights(spec: str | None, meta_out: dict) -> Outcome:
    """The weights JSON resolves, its tensor file exists and matches the recorded SHA-256."""
    from facesearch.models.weights_meta import read_meta, resolve_weights

    js = resolve_weights(spec)
    meta = read_meta(js)
    if meta["config"].get("components"):  # a fused model: loading checks every part's checksum
        from facesearch.models.runtime import load_runtime_embedder

        if load_runtime_embedder(js) is None:  # no export to run: the torch module (the train extra)
            from facesearch.models.weights import load_weights

            load_weights(js)
        meta_out.update(meta)
        parts = " + ".join(c["weights"] for c in meta["config"]["components"])
        return True, f"{js} ({meta['model_id']}: {parts}, checksum ok for every part)", None
    st = js.with_suffix(".safetensors")
    if not st.is_file():
        return False, f"{js} has no tensor file {st.name}", "copy the .safetensors beside its .json"
    recorded, actual = meta.get("sha256"), modelfiles.sha256_file(st)
    if recorded and recorded != actual:
        return False, f"{st.name} sha256 {actual[:12]}… != recorded {recorded[:12]}…", \
            "the .json and .safetensors come from different trainings; copy the matching pair"
    meta_out.update(meta)
    check = "checksum ok" if recorded else "no checksum recorded"
    return True, f"{js} ({meta.get('model_id', '?')}, {check})", None


def _index(folder: Path | None, weights_meta: dict) -> Outcome:
    from facesearch.core.paths import resolve_index

    folder = Path(folder) if folder is not None else resolve_index(None)
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return True, f"no index at {folder}", "build one with facesearch index PATH"
    from facesearch.store.face_index import FaceIndex  # being written alongside; failures become a check

    with FaceIndex.open(folder, readonly=True) as store:
        report = store.verify()
        model_id = store.manifest.get("model_id")
    detail = (f"{folder}: {report.get('faces', '?')} faces, {report.get('index_type', '?')}, "
              f"{len(report.get('files_missing') or [])} files missing, "
              f"{len(report.get('files_changed') or [])} changed")
    if not report.get("faiss_ok", True):
        return False, detail + ", FAISS out of sync with SQLite", "run facesearch verify --fix"
    if not report.get("ok", False):
        return False, detail, "re-run facesearch index PATH --prune to pick up moved, changed or deleted files"
    if weights_meta.get("model_id") and model_id and model_id != weights_meta["model_id"]:
        return False, f"{detail}; built with {model_id}, weights are {weights_meta['model_id']}", \
            "query with the weights the index was built with, or facesearch rebuild --weights ..."
    return True, detail, None


def _env_summary() -> dict:
    """Environment variables that change where facesearch looks (for the CLI to show)."""
    keys = ("FACESEARCH_HOME", "FACESEARCH_WEIGHTS", "FACESEARCH_INDEX", "FACESEARCH_MAX_PIXELS", "FACESEARCH_PRECISION")
    return {k: os.environ[k] for k in keys if k in os.environ}
