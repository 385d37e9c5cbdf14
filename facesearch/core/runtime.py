"""The inference runtime: the one seam through which the detector and the embedders run on a CPU.

Torch stays the training framework, the export source (``tools/export_onnx.py``) and the CUDA
path; on a CPU the shipped networks run as ONNX files in a runtime chosen by measurement
(``weights/README.md``, "Runtime"): OpenVINO for the embedders and ONNX Runtime for the
detector, each falling back to the other (:data:`PREFERRED`). Neither imports torch, so
``index``, ``query``, ``dedupe``, ``people``, ``serve`` and the detection workers start without
it. Pre- and post-processing are numpy.

An exported network is ``<weights dir>/onnx/NAME.onnx`` beside ``NAME.json``, which records the
ONNX file's SHA-256 and that of the safetensors it was exported from; :func:`load_network`
checks both, so a stale or swapped export is a clear error. Lives in ``core`` because both the
detector (``faces``) and the embedders (``models``) run through it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import queue
from pathlib import Path
from typing import Callable

import numpy as np

from facesearch.core.errors import FacesearchError, ModelMismatchError
from facesearch.core.modelfiles import sha256_file
from facesearch.core.paths import cache_dir
from facesearch.core.precision import cpu_precision, read_back_precision

__all__ = ["ONNX_DIR", "OPSET", "RUNTIMES", "Network", "choose_runtime", "find_onnx", "load_network",
           "onnx_threads", "runtime_precision"]

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
OPSET = 17
RUNTIMES = ("auto", "openvino", "onnxruntime", "torch")
EXPORT_HINT = "run `python tools/export_onnx.py` to re-export weights/onnx/ from the shipped safetensors"
# Intra-op threads per kind of network. YuNet runs in the detection workers, one per core, so one
# thread each. The embedders run in one process (the index's main process, the service) fed by
# those workers: there one thread made the embedding the bottleneck of a whole index run (bench/
# pipeline.py: 0.83x the torch path, whose embedding used every core), so they take every core.
DEFAULT_THREADS = {"detector": 1, "embedder": 0}  # 0: one per core


def onnx_threads(kind: str = "embedder") -> int:
    """Intra-op threads for a ``kind`` of network: ``$FACESEARCH_THREADS``, else :data:`DEFAULT_THREADS`."""
    value = os.environ.get("FACESEARCH_THREADS", "")
    if value.isdigit():
        return max(1, int(value))
    return DEFAULT_THREADS[kind] or os.cpu_count() or 1


# Which runtime runs which kind of network when both are installed, fastest first, as measured
# on the networks themselves (weights/README.md, "Runtime"): OpenVINO runs the embedders ~2x
# faster than ONNX Runtime (SFace's per-channel PReLU), ONNX Runtime runs YuNet ~3x faster than
# OpenVINO (a photo's shape changes from call to call).
PREFERRED = {"embedder": ("openvino", "onnxruntime"), "detector": ("onnxruntime", "openvino")}


def choose_runtime(asked: str | None = None, kind: str = "embedder") -> str:
    """``openvino``, ``onnxruntime`` or ``torch`` for a ``kind`` (embedder | detector) of network:
    ``asked`` (else ``$FACESEARCH_RUNTIME``, else auto: the fastest installed, else torch)."""
    name = asked or os.environ.get("FACESEARCH_RUNTIME") or "auto"
    if name not in RUNTIMES:
        raise FacesearchError(f"unknown runtime {name!r}", hint=f"use one of {', '.join(RUNTIMES)}")
    if name != "auto":
        if name != "torch" and importlib.util.find_spec(name) is None:
            raise FacesearchError(f"runtime {name} is not installed", hint=f"pip install {name}")
        return name
    return next((c for c in PREFERRED[kind] if importlib.util.find_spec(c) is not None), "torch")


def runtime_precision(runtime: str, precision: str | None = None) -> str:
    """The arithmetic a CPU network runs in on ``runtime`` under ``precision``, without loading it:
    ONNX Runtime's CPU provider has no bf16 kernels for these networks (always fp32); OpenVINO and
    torch follow :func:`facesearch.core.precision.cpu_precision` (bf16 only where the CPU has it)."""
    return "fp32" if runtime == "onnxruntime" else cpu_precision(precision)


def find_onnx(weights_dir: Path, name: str) -> tuple[Path, Path] | None:
    """``(NAME.onnx, NAME.json)`` exported beside the weights in ``weights_dir``, or None."""
    onnx, js = weights_dir / ONNX_DIR / f"{name}.onnx", weights_dir / ONNX_DIR / f"{name}.json"
    return (onnx, js) if onnx.is_file() and js.is_file() else None


def check_export(onnx: Path, js: Path, source_sha256: str) -> dict:
    """The export's JSON, after checking that it names ``source_sha256`` and the ONNX's own bytes."""
    try:
        meta = json.loads(js.read_text())
        recorded, source = meta["sha256"], meta["source"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FacesearchError(f"unreadable export record {js}: {e}", hint=EXPORT_HINT) from e
    if source != source_sha256:
        raise ModelMismatchError(f"{onnx.name} was exported from {meta['source'].get('file')} {source[:12]}…, "
                                 f"but the installed weights are {source_sha256[:12]}…", hint=EXPORT_HINT)
    if sha256_file(onnx) != recorded:
        raise ModelMismatchError(f"{onnx} does not match the sha256 in {js.name}", hint=EXPORT_HINT)
    return meta


class Network:
    """A compiled network: ``net(x)`` -> its outputs as float32 arrays, in the export's order."""

    def __init__(self, run: Callable[[np.ndarray], list[np.ndarray]], runtime: str, precision: str, meta: dict):
        self._run, self.runtime, self.precision, self.meta = run, runtime, precision, meta
        self.outputs: list[str] = list(meta.get("outputs", []))

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self._run(np.ascontiguousarray(x, dtype=np.float32))


def load_network(onnx: Path, js: Path, source_sha256: str, runtime: str, precision: str,
                 threads: int | None = None, kind: str = "embedder") -> Network:
    """``onnx`` compiled in ``runtime`` (openvino | onnxruntime) at ``precision`` (fp32 | bf16), on
    ``threads`` (default :func:`onnx_threads` for its ``kind``)."""
    meta = check_export(onnx, js, source_sha256)
    threads = threads or onnx_threads(kind)
    loader = _openvino if runtime == "openvino" else _onnxruntime
    run, actual = loader(str(onnx), precision, threads)
    return Network(run, runtime, actual, meta)


def _onnxruntime(path: str, precision: str, threads: int) -> tuple[Callable[[np.ndarray], list[np.ndarray]], str]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    # ONNX Runtime's CPU provider has no bf16 kernels for these convs: it always runs fp32.
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return (lambda x: sess.run(None, {name: x})), "fp32"


def _openvino(path: str, precision: str, threads: int) -> tuple[Callable[[np.ndarray], list[np.ndarray]], str]:
    """The compiled network's call and the precision it really runs in (a CPU without native bf16
    runs a bf16 request in fp32)."""
    compiled = _ov_compile(path, precision, threads)
    # An infer request is not thread-safe: one per concurrent caller, lent from here. Not kept in a
    # thread's local storage: a thread that ends (the service's worker threads) then frees its request,
    # and OpenVINO's destructor drops and re-takes the GIL; when that races the interpreter's exit
    # the process aborts ("terminate called without an active exception", exit 134: 7 of 16 runs of
    # a thread that ran the network once, 0 of 40 with requests lent from here; a CI run failed on it).
    idle: queue.SimpleQueue = queue.SimpleQueue()

    def run(x: np.ndarray) -> list[np.ndarray]:
        try:
            request = idle.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            request.infer({0: x})
            return [np.array(request.get_output_tensor(i).data, dtype=np.float32) for i in range(len(compiled.outputs))]
        finally:
            idle.put(request)

    return run, read_back_precision(compiled.get_property("INFERENCE_PRECISION_HINT"))


def _ov_compile(path: str, precision: str, threads: int):
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    cache = ov_cache_dir()
    if cache is not None:
        # Compiling the two embedders costs ~3 s on a busy 2-core machine, loading them from
        # OpenVINO's own cache ~0.5 s: a cold `facesearch query` pays the compile once per machine.
        config["CACHE_DIR"] = str(cache)
    return _ov_core().compile_model(path, "CPU", config)


def ov_cache_dir() -> Path | None:
    """Where OpenVINO keeps compiled networks: ``$FACESEARCH_CACHE/openvino`` or
    ``~/.cache/facesearch/openvino``; None where it cannot be created (no cache, only slower)."""
    root = cache_dir()
    try:
        (root / "openvino").mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return root / "openvino"


@functools.cache
def _ov_core():
    return _import_openvino().Core()


def _import_openvino():
    """``import openvino`` without its model converter.

    OpenVINO's ``__init__`` imports ``openvino.tools.ovc`` (a model converter, 0.8 of the 1.1 s
    the import took in a cold query on a busy machine) inside ``try/except ImportError``; the
    runtime never converts, so a stand-in that has no ``convert_model`` lets that import fail
    as designed. The stand-in is removed again, so an explicit later import gets the real one.
    """
    import sys
    import types

    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    stub = "openvino.tools.ovc"
    had = stub in sys.modules
    if not had:
        sys.modules[stub] = types.ModuleType(stub)
    try:
        import openvino
    except ImportError:  # an OpenVINO that needs the converter at import: the plain import
        sys.modules.pop(stub, None)
        import openvino
    finally:
        if not had and isinstance(sys.modules.get(stub), types.ModuleType) and not hasattr(sys.modules[stub], "__file__"):
            sys.modules.pop(stub, None)
    return openvino
