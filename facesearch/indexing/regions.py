"""Names other photo tools gave faces (XMP regions), joined to the faces detection found.

Runs on the worker side, after detection (:mod:`facesearch.indexing.detection`): a named region that
overlaps a detected face (IoU >= :data:`REGION_IOU`) labels it, so it is pinned to the person of that
name when people are clustered, as ``--label-from-folder`` labels do. A named region with no detected
face becomes a face of its own, cropped from the region's box as ``--detector none`` crops a face (no
landmarks), or is reported when the box is too small to embed. Disagreements are reported, never
settled here: a face two regions give different names is left unlabelled, and a region name that
differs from the folder label keeps both (the face's own label wins in ``query``) and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facesearch.faces.chips import make_chips
from facesearch.faces.face import Face, iou
from facesearch.photos.xmp import Region, read_regions
from facesearch.photos.xmp_frame import Frame

# Tools draw face boxes of their own tightness: a detector's box inside a region 1.5x its side
# has IoU 0.44, so matching asks less than the 0.5 that carries labels between detections.
REGION_IOU = 0.3
MIN_REGION_SIDE = 16  # px: below this a crop holds too little face to embed


@dataclass
class RegionImport:
    """What the regions of one photo did: a label per detected face (None: none), faces added from
    region boxes (with chips and labels), and what is reported."""

    labels: list[str | None]
    added: list[Face] = field(default_factory=list)
    added_chips: list = field(default_factory=list)
    added_labels: list[str] = field(default_factory=list)
    named: int = 0  # named regions read
    conflicts: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def import_regions(path: str, img: np.ndarray, faces: list[Face], align: str, folder_label: str | None,
                   frame: Frame | None = None) -> RegionImport:
    """Read ``path``'s regions and join them to ``faces`` detected in ``img`` (the rotated photo)."""
    read = read_regions(path, frame)
    named = _unique([r for r in read.regions if r.name])
    out = RegionImport([None] * len(faces), named=len(named), warnings=read.warnings)
    names_of: list[set[str]] = [set() for _ in faces]
    unmatched = []
    for region in named:
        k = best_face(region.box, faces)
        if k is None:
            unmatched.append(region)
        else:
            names_of[k].add(region.name)
    for k, names in enumerate(names_of):
        _label(out, k, names, faces[k].box, path)
    for region in unmatched:
        _add_face(out, region, img, align, path)
    _folder_conflicts(out, path, folder_label)
    return out


def best_face(box, faces: list[Face]) -> int | None:
    """The detected face ``box`` overlaps most, if by REGION_IOU."""
    ious = [iou(box, f.box) for f in faces]
    k = int(np.argmax(ious)) if ious else None
    return k if k is not None and ious[k] >= REGION_IOU else None


def _unique(regions: list[Region]) -> list[Region]:
    """One region per face and name: digiKam writes each face twice (MWG and MP), and a photo's
    sidecar often repeats its embedded XMP."""
    out: list[Region] = []
    for r in regions:
        if not any(o.name == r.name and iou(o.box, r.box) >= 0.5 for o in out):
            out.append(r)
    return out


def _label(out: RegionImport, k: int, names: set[str], box, path: str) -> None:
    if len(names) == 1:
        out.labels[k] = next(iter(names))
    elif names:
        out.conflicts.append({"path": path, "kind": "names", "box": _rounded(box), "names": sorted(names),
                              "resolution": "face left unlabelled"})


def _add_face(out: RegionImport, region: Region, img: np.ndarray, align: str, path: str) -> None:
    x1, y1, x2, y2 = region.box
    if min(x2 - x1, y2 - y1) < MIN_REGION_SIDE:
        out.failed.append({"path": path, "name": region.name, "box": _rounded(region.box),
                           "error": f"the region is under {MIN_REGION_SIDE} px: too small to embed"})
        return
    face = Face(box=(float(x1), float(y1), float(x2), float(y2)), score=0.0)
    out.added.append(face)
    out.added_chips += make_chips(img, [face], align)
    out.added_labels.append(region.name)


def _folder_conflicts(out: RegionImport, path: str, folder_label: str | None) -> None:
    if folder_label is None:
        return
    for name in sorted({n for n in out.labels + out.added_labels if n and n != folder_label}):
        out.conflicts.append({"path": path, "kind": "folder", "names": [name, folder_label],
                              "resolution": "the face keeps the region's name; the photo keeps the folder label"})


def _rounded(box) -> list[float]:
    return [round(float(v), 1) for v in box]
