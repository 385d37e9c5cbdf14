"""Face regions other photo tools stored in XMP: read from the photo and from its sidecars.

Two schemas are read, as digiKam, Lightroom, Picasa, Windows Photos, ExifToolGui and immich write them:

- the Metadata Working Group's ``mwg-rs:Regions`` (``RegionList`` of ``Type=Face`` regions with a
  ``Name`` and a normalised, *centre*-based ``Area`` x/y/w/h, plus ``AppliedToDimensions``);
- Microsoft's ``MP:RegionInfo`` (``Regions`` with a ``PersonDisplayName`` and a normalised,
  *top-left*-based ``Rectangle`` "x, y, w, h").

They are looked for in the photo's embedded XMP and in the sidecars ``photo.jpg.xmp`` (digiKam,
darktable) and ``photo.xmp`` (Lightroom). XMP is parsed by exiv2 (``pyexiv2``, in-process); this
module only reads its flattened keys (``Xmp.mwg-rs.Regions/mwg-rs:RegionList[1]/mwg-rs:Name``).
Boxes come out in pixels of the EXIF-rotated image, the one faces are detected on
(:mod:`facesearch.photos.xmp_frame`). Malformed XMP is a warning, never an exception.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from facesearch.core.errors import one_line
from facesearch.photos.scan import IMAGE_EXTS
from facesearch.photos.xmp_frame import Box, Frame, read_frame, to_display

log = logging.getLogger(__name__)

MWG = "Xmp.mwg-rs.Regions"
MWG_LIST = f"{MWG}/mwg-rs:RegionList"
MWG_DIMS = f"{MWG}/mwg-rs:AppliedToDimensions"
MP = "Xmp.MP.RegionInfo"
MP_LIST = f"{MP}/MPRI:Regions"
SIDECAR_NAMES = ("full", "stem")  # photo.jpg.xmp | photo.xmp
_ITEM = re.compile(r"^(?P<list>.+?)\[(?P<n>\d+)\]/(?P<field>.+)$")


@dataclass(frozen=True)
class Region:
    """One named (or unnamed) face region, in pixels of the EXIF-rotated photo.

    ``schema`` is ``mwg`` or ``mp``; ``source`` where it was found: ``embedded`` or the sidecar's name.
    """

    name: str | None
    box: Box
    schema: str
    source: str


@dataclass
class RegionsRead:
    """What :func:`read_regions` found: the regions, and a warning for each source it could not read."""

    regions: list[Region] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def sidecar_path(photo: str | os.PathLike, naming: str = "full") -> Path:
    """The sidecar of ``photo``: ``photo.jpg.xmp`` (``full``, digiKam) or ``photo.xmp`` (``stem``, Lightroom)."""
    if naming not in SIDECAR_NAMES:
        raise ValueError(f"sidecar naming must be one of {SIDECAR_NAMES}, not {naming!r}")
    photo = Path(photo)
    return photo.with_name(photo.name + ".xmp") if naming == "full" else photo.with_suffix(".xmp")


def stem_sharers(photos: list[Path]) -> dict[Path, list[Path]]:
    """The photos of ``photos`` whose ``photo.xmp`` (``stem`` naming) another photo would read as its own
    too, each with those others: photos beside it (on disk or in ``photos``) whose names differ only in
    the extension (``x.jpg``, ``x.png``; ``IMG_1.HEIC``, ``IMG_1.JPG``). Case is ignored, as on the
    case-insensitive disks of Windows and macOS, where ``IMG_1.xmp`` and ``img_1.xmp`` are one file."""
    by_stem: dict[tuple[Path, str], set[Path]] = {}
    for folder in {p.parent for p in photos}:
        for name in _listdir(folder):
            if os.path.splitext(name)[1].lower() in IMAGE_EXTS:
                by_stem.setdefault((folder, os.path.splitext(name)[0].casefold()), set()).add(folder / name)
    for p in photos:  # a photo gone from the disk still shares the name of its sidecar
        by_stem.setdefault((p.parent, p.stem.casefold()), set()).add(p)
    return {p: sorted(others) for p in photos if (others := by_stem[(p.parent, p.stem.casefold())] - {p})}


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:  # an unreadable folder: the photos the index knows there are still compared
        return []


def sidecars(photo: str | os.PathLike) -> list[Path]:
    """The sidecars of ``photo`` that exist, ``photo.jpg.xmp`` first."""
    return [p for p in dict.fromkeys(sidecar_path(photo, n) for n in SIDECAR_NAMES) if p.is_file()]


def sidecar_signature(photo: str | os.PathLike) -> str:
    """Size and mtime of each sidecar of ``photo`` ("" when it has none): a change means re-read them."""
    parts = []
    for p in sidecars(photo):
        try:
            st = p.stat()
        except OSError:
            continue
        parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def is_sidecar(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an XMP sidecar (by its extension)."""
    return os.fspath(path).lower().endswith(".xmp")


def read_regions(photo: str | os.PathLike, frame: Frame | None = None) -> RegionsRead:
    """Every MWG and MP face region of ``photo``: embedded first, then each sidecar.

    ``frame`` (the photo's stored size and orientation) is read from the photo when not given.
    Never raises for bad metadata: each unreadable source adds a warning and is skipped.
    """
    out = RegionsRead()
    try:
        frame = frame or read_frame(photo)
    except Exception as e:  # not an image we can size: the decoder reports the file itself
        out.warnings.append(f"{photo}: cannot read the photo's size for its XMP regions ({one_line(e)})")
        return out
    for source, path in [("embedded", Path(photo))] + [(p.name, p) for p in sidecars(photo)]:
        keys = _read_keys(path, out.warnings, sidecar=source != "embedded")
        out.regions += parse_regions(keys, frame, source)
    return out


def read_xmp_keys(data: bytes) -> dict:
    """The flattened XMP of a photo's or sidecar's bytes (exiv2's keys); ValueError when malformed."""
    import pyexiv2

    pyexiv2.set_log_level(4)  # exiv2's own messages would go to stderr; we report instead
    try:
        img = pyexiv2.ImageData(data)
    except RuntimeError as e:
        raise ValueError(one_line(e)) from None
    try:
        keys, raw = img.read_xmp(), img.read_raw_xmp()
    except (RuntimeError, UnicodeDecodeError) as e:
        raise ValueError(one_line(e)) from None
    finally:
        img.close()
    if not keys and raw.strip(" \x00\n\r\t") and not _well_formed(raw):  # exiv2 gives up without raising
        raise ValueError("the XMP packet is not well-formed XML")
    return keys


def _well_formed(raw: str) -> bool:
    """Whether ``raw`` parses as XML (an empty packet does; a cut or garbled one does not). No DTDs:
    XMP never has one, and an entity bomb must not be expanded."""
    from xml.parsers import expat

    parser = expat.ParserCreate()

    def refuse_dtd(*_args) -> None:
        raise ValueError("a DTD in XMP")

    parser.StartDoctypeDeclHandler = refuse_dtd
    try:
        parser.Parse(raw.encode("utf-8", "replace"), True)
    except (expat.ExpatError, ValueError):
        return False
    return True


def _read_keys(path: Path, warnings: list[str], sidecar: bool) -> dict:
    try:
        return read_xmp_keys(path.read_bytes())
    except OSError as e:
        warnings.append(f"{path}: cannot read ({one_line(e)})")
    except ValueError as e:
        if sidecar or "unknown image type" not in str(e):  # a photo exiv2 does not know has no XMP for us
            warnings.append(f"{path}: malformed XMP, regions ignored ({e})")
    return {}


def parse_regions(keys: dict, frame: Frame, source: str) -> list[Region]:
    """The face regions in flattened XMP ``keys`` (MWG, then MP), boxes in the rotated photo's pixels."""
    return _mwg(keys, frame, source) + _mp(keys, frame, source)


def list_items(keys: dict, list_key: str) -> dict[int, dict[str, str]]:
    """Item number (1-based, as XMP counts) -> that item's fields (``mwg-rs:Area/stArea:x`` -> value)."""
    items: dict[int, dict[str, str]] = {}
    for key, value in keys.items():
        m = _ITEM.match(key)
        if m and m["list"] == list_key and isinstance(value, str):
            items.setdefault(int(m["n"]), {})[m["field"]] = value
    return dict(sorted(items.items()))


def mwg_area(fields: dict[str, str]) -> Box | None:
    """An MWG item's ``Area`` as a stored-image box normalised to 0..1 (None if absent or not normalised)."""
    try:
        x, y, w, h = (float(fields[f"mwg-rs:Area/stArea:{k}"]) for k in "xywh")
    except (KeyError, ValueError):
        return None
    if fields.get("mwg-rs:Area/stArea:unit", "normalized") != "normalized" or w <= 0 or h <= 0:
        return None
    return (x - w / 2, y - h / 2, x + w / 2, y + h / 2)


def mp_rectangle(fields: dict[str, str]) -> Box | None:
    """An MP item's ``Rectangle`` ("x, y, w, h", top-left based) as a normalised box (None if malformed)."""
    try:
        x, y, w, h = (float(v) for v in fields.get("MPReg:Rectangle", "").split(","))
    except ValueError:
        return None
    return (x, y, x + w, y + h) if w > 0 and h > 0 else None


def applied_to(keys: dict) -> tuple[float, float] | None:
    """MWG's ``AppliedToDimensions`` (w, h) when present and numeric."""
    try:
        return float(keys[f"{MWG_DIMS}/stDim:w"]), float(keys[f"{MWG_DIMS}/stDim:h"])
    except (KeyError, ValueError, TypeError):
        return None


def is_face(fields: dict[str, str]) -> bool:
    """MWG regions also mark pets, focus points and bar codes: only faces (or untyped ones) count."""
    return fields.get("mwg-rs:Type", "Face") == "Face"


def _mwg(keys: dict, frame: Frame, source: str) -> list[Region]:
    written = frame.as_written(applied_to(keys))
    out = []
    for fields in list_items(keys, MWG_LIST).values():
        area = mwg_area(fields)
        if area is not None and is_face(fields):
            out.append(Region(_name(fields.get("mwg-rs:Name")), to_display(written, area), "mwg", source))
    return out


def _mp(keys: dict, frame: Frame, source: str) -> list[Region]:
    out = []
    for fields in list_items(keys, MP_LIST).values():
        rect = mp_rectangle(fields)
        if rect is not None:
            out.append(Region(_name(fields.get("MPReg:PersonDisplayName")), to_display(frame, rect), "mp", source))
    return out


def _name(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None
