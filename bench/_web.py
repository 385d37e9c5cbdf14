"""Web-like photos for ``bench/pipeline.py --web N``: the race on photos the size of the web's.

The data has no in-the-wild web photos (the held-out set that judges the product is of them), and
``bench/pipeline.py``'s mix is of small crops (pins_celebs at most 128 px, yalefaces 320×243),
where dlib's HOG detector is cheap and the race is mostly the embedders. These photos are the
other half: real face-free photos (``bench/groups.py``'s backgrounds) at 800×600, 1024×768 and
1280×960, each with 1-4 ``dev/pins_celebs`` faces 40-160 px wide pasted in, saved as JPEG. A
composite, not a real photo (see ``groups``), but a web photo's size, face sizes and count.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

import _scales
import groups

SIZES = ((800, 600), (1024, 768), (1280, 960))
FACE_WIDTHS = (40, 160)
FACES_PER_PHOTO = (1, 4)


def build_web_collection(work: Path, n: int, pins: list[Path]) -> tuple[Path, int]:
    """``n`` web-like JPEGs in ``work/web`` (flat: the face_recognition CLI does not recurse);
    returns the folder and how many faces were pasted in all."""
    sources = groups.source_faces(pins, limit=80, seed=0)
    bgs = groups.backgrounds()
    folder = work / "web"
    folder.mkdir()
    faces = 0
    for k, size in enumerate(SIZES):
        count = n // len(SIZES) + (k < n % len(SIZES))
        for j, photo in enumerate(_scales.crowds(sources, bgs, count, size, FACE_WIDTHS, FACES_PER_PHOTO, seed=k)):
            bgr = cv2.cvtColor(np.ascontiguousarray(photo.image), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(folder / f"web{k}_{j:04d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            faces += len(photo.boxes)
    return folder, faces
