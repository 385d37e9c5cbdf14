"""Serialise dlib's HOG frontal face detector to ``weights/dlib_hog.svm`` (+ ``dlib_hog.json``).

    python tools/export_hog.py            # -> weights/dlib_hog.svm, weights/dlib_hog.json
    python tools/export_hog.py --out DIR

Why a file when dlib compiles the detector in: ``dlib.get_frontal_face_detector()`` rebuilds it
from a string inside dlib each time a process asks, 0.36 s on a quiet 2-core machine (2 s under
load), and the default pipeline needs it in every query to find dlib's own box for the landmarks
(``faces/reconcile.hog_box``). ``dlib.fhog_object_detector(path)`` reads the same five filters from
this file in ~2 ms. The file is the detector dlib ships, saved by dlib's own serialiser (not
pickle): the same bytes from run to run, the same detections (``tests/test_detect.py``). The JSON
records its SHA-256 and the dlib version it came from; ``faces/backends.hog_model`` checks the
checksum and falls back to the compiled-in detector when the file is missing or does not match.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dlib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facesearch.core.atomic import atomic_path, atomic_write_json  # noqa: E402
from facesearch.core.modelfiles import HOG_FILE, sha256_file  # noqa: E402


def export(out: Path) -> Path:
    """Write ``HOG_FILE`` and its JSON into ``out``; returns the model path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / HOG_FILE
    with atomic_path(path) as tmp:
        dlib.get_frontal_face_detector().save(str(tmp))
    atomic_write_json(path.with_suffix(".json"), {
        "name": "dlib_hog",
        "file": HOG_FILE,
        "sha256": sha256_file(path),
        "source": f"dlib {dlib.__version__}: dlib.get_frontal_face_detector().save() (dlib's serialiser)",
        "licence": "Boost Software License 1.0 (dlib)",
        "made_by": "python tools/export_hog.py",
    })
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "weights")
    print(export(ap.parse_args(argv).out))


if __name__ == "__main__":
    main()
