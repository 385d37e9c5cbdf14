"""Merging named faces into XMP as MWG (and Microsoft) regions, keeping everything already there.

:func:`merge_regions` takes the bytes of a sidecar or of a photo and gives them back with the faces
written in: a region of the same face (``same_face`` decides, on boxes in the rotated photo's
pixels) is updated in place; every other region, and every other XMP property, is left exactly as
it was. exiv2 (``pyexiv2``) does all parsing and writing; for a photo it rewrites only the XMP
segment, so the pixels stay byte for byte the same. Reading and writing files is the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from facesearch.core.errors import one_line
from facesearch.photos.xmp import (
    MP, MP_LIST, MWG, MWG_DIMS, MWG_LIST, applied_to, is_face, list_items, mp_rectangle, mwg_area, read_xmp_keys,
)
from facesearch.photos.xmp_frame import Box, Frame, to_display, to_stored

# The empty XMP packet (XMP specification part 1, 7.3): exiv2 needs a packet to open before it can
# write a new sidecar; everything written into it is exiv2's own serialisation.
EMPTY_PACKET = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
                b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/><?xpacket end="w"?>')
STRUCT, BAG = 'type="Struct"', 'type="Bag"'

SameFace = Callable[[Box, Box], bool]


@dataclass(frozen=True)
class NamedFace:
    """A face to write: its person's name and its box in pixels of the rotated photo."""

    name: str
    box: Box


@dataclass
class MergeResult:
    """The merged bytes and what changed: regions added, regions of the same face updated (``renamed``
    lists those whose name changed), and regions left alone."""

    data: bytes
    added: int = 0
    updated: int = 0
    kept: int = 0
    renamed: list[dict] = field(default_factory=list)


def merge_regions(data: bytes, frame: Frame, faces: list[NamedFace], same_face: SameFace,
                  microsoft: bool = True) -> MergeResult:
    """``data`` (a photo or a sidecar) with ``faces`` merged in as MWG regions (and MP, as digiKam writes).

    Raises ValueError when ``data``'s XMP is malformed (nothing is written into XMP we cannot read) or
    exiv2 cannot write XMP into its format.
    """
    import pyexiv2

    keys = read_xmp_keys(data)
    result = MergeResult(data)
    changes: dict[str, str] = {}
    _merge_mwg(keys, frame, faces, same_face, changes, result)
    if microsoft:
        _merge_mp(keys, frame, faces, same_face, changes)
    # Only what differs: exiv2 may order a packet's properties anew, so a rewrite that changes no value
    # would still change bytes (and make a journal entry, and a sidecar that looks edited).
    changes = {k: v for k, v in changes.items() if keys.get(k) != v}
    if not changes:
        return result
    img = pyexiv2.ImageData(data)
    try:
        img.modify_xmp(changes)
        result.data = img.get_bytes()
    except RuntimeError as e:  # a format exiv2 reads but cannot write (BMP): as unusable as malformed XMP
        raise ValueError(one_line(e)) from None
    finally:
        img.close()
    return result


def _merge_mwg(keys: dict, frame: Frame, faces: list[NamedFace], same_face: SameFace, changes: dict,
               result: MergeResult) -> None:
    if MWG not in keys:
        changes[MWG] = STRUCT
    if f"{MWG_DIMS}/stDim:w" not in keys:  # foreign regions keep the dimensions they were written for
        changes.update({MWG_DIMS: STRUCT, f"{MWG_DIMS}/stDim:w": str(frame.width),
                        f"{MWG_DIMS}/stDim:h": str(frame.height), f"{MWG_DIMS}/stDim:unit": "pixel"})
    if MWG_LIST not in keys:
        changes[MWG_LIST] = BAG
    written = frame.as_written(applied_to(keys))
    items = list_items(keys, MWG_LIST)
    boxes = {n: to_display(written, a) for n, f in items.items() if is_face(f) and (a := mwg_area(f)) is not None}
    slots = _assign(boxes, faces, same_face, next_slot=max(items, default=0) + 1)
    for face, n in zip(faces, slots):
        old = items.get(n)
        if old is not None:
            result.updated += 1
            if old.get("mwg-rs:Name") != face.name:
                result.renamed.append({"from": old.get("mwg-rs:Name"), "to": face.name})
        else:
            result.added += 1
        changes.update(_mwg_item(f"{MWG_LIST}[{n}]", face, written, new=old is None))
    result.kept = len(items) - result.updated


def _merge_mp(keys: dict, frame: Frame, faces: list[NamedFace], same_face: SameFace, changes: dict) -> None:
    if MP not in keys:
        changes[MP] = STRUCT
    if MP_LIST not in keys:
        changes[MP_LIST] = BAG
    items = list_items(keys, MP_LIST)
    boxes = {n: to_display(frame, r) for n, f in items.items() if (r := mp_rectangle(f)) is not None}
    for face, n in zip(faces, _assign(boxes, faces, same_face, next_slot=max(items, default=0) + 1)):
        x1, y1, x2, y2 = to_stored(frame, face.box)
        item = f"{MP_LIST}[{n}]"
        if n not in items:
            changes[item] = STRUCT
        changes[f"{item}/MPReg:PersonDisplayName"] = face.name
        changes[f"{item}/MPReg:Rectangle"] = ", ".join(_num(v) for v in (x1, y1, x2 - x1, y2 - y1))


def _assign(boxes: dict[int, Box], faces: list[NamedFace], same_face: SameFace, next_slot: int) -> list[int]:
    """The list item each face goes to: the existing region of the same face, else a new one at the end."""
    slots, taken = [], set()
    for face in faces:
        match = next((n for n, b in boxes.items() if n not in taken and same_face(b, face.box)), None)
        if match is None:
            match, next_slot = next_slot, next_slot + 1
        taken.add(match)
        slots.append(match)
    return slots


def _mwg_item(item: str, face: NamedFace, frame: Frame, new: bool) -> dict[str, str]:
    """The keys of one MWG face region (the struct markers too for a new one); Area is centre-based."""
    x1, y1, x2, y2 = to_stored(frame, face.box)
    area = f"{item}/mwg-rs:Area"
    keys = {item: STRUCT, area: STRUCT} if new else {}
    return {**keys, f"{item}/mwg-rs:Name": face.name, f"{item}/mwg-rs:Type": "Face",
            f"{area}/stArea:x": _num((x1 + x2) / 2), f"{area}/stArea:y": _num((y1 + y2) / 2),
            f"{area}/stArea:w": _num(x2 - x1), f"{area}/stArea:h": _num(y2 - y1), f"{area}/stArea:unit": "normalized"}


def _num(v: float) -> str:
    return f"{v:.6f}".rstrip("0").rstrip(".") or "0"
