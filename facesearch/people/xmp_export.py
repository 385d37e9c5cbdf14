"""``facesearch people write-xmp``: the names learnt here, written where other photo tools read them.

Each face of a named person is merged into its photo's XMP as an MWG region (and a Microsoft one, as
digiKam writes both): by default into a sidecar beside the photo (``photo.jpg.xmp``, digiKam and
darktable; ``photo.xmp`` with ``sidecar_name="stem"``, Lightroom), so the photo's bytes never change;
into the photo itself only with ``embed``. Regions and XMP already there are kept; a region of the
same face is updated, not duplicated (:mod:`facesearch.photos.xmp_write`). Every file is written
through the index's journal (:meth:`facesearch.core.journal.MoveJournal.write`) so ``facesearch undo``
restores each sidecar and photo byte for byte and removes the sidecars this created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from facesearch.core.errors import DataError, one_line
from facesearch.core.journal import MoveJournal
from facesearch.core.paths import journal_dir
from facesearch.faces.face import iou
from facesearch.indexing.regions import REGION_IOU
from facesearch.photos.scan import content_hash, stat_file
from facesearch.photos.xmp import SIDECAR_NAMES, sidecar_path, sidecar_signature
from facesearch.photos.xmp_frame import read_frame
from facesearch.photos.xmp_write import EMPTY_PACKET, NamedFace, merge_regions
from facesearch.store import people as catalogue
from facesearch.store.face_index import FaceIndex


@dataclass
class XmpExportOptions:
    index: os.PathLike
    persons: list[int] = field(default_factory=list)  # empty: every named person
    embed: bool = False  # write into the photos instead of sidecars
    sidecar_name: str = "full"  # full: photo.jpg.xmp | stem: photo.xmp


def same_face(a, b) -> bool:
    """A region already in the XMP is this face's when they overlap as an imported region must."""
    return iou(a, b) >= REGION_IOU


def write_xmp(opts: XmpExportOptions) -> dict:
    """Write the named faces of the index into XMP; the JSON contract of ``people write-xmp --json``.

    Returns ``{"journal", "files_written", "files_created", "unchanged", "regions_added",
    "regions_updated", "regions_kept", "renamed", "skipped", "people", "faces"}``; ``journal`` is None
    when nothing was written.
    """
    if opts.sidecar_name not in SIDECAR_NAMES:
        raise DataError(f"unknown sidecar name {opts.sidecar_name!r}", hint=f"use one of {', '.join(SIDECAR_NAMES)}")
    out = {"journal": None, "files_written": 0, "files_created": 0, "unchanged": 0, "regions_added": 0,
           "regions_updated": 0, "regions_kept": 0, "renamed": [], "skipped": [], "people": 0, "faces": 0}
    with FaceIndex.open(opts.index) as store:
        faces = catalogue.named_faces(store, opts.persons)
        out["people"], out["faces"] = len({f[2] for f in faces}), len(faces)
        journal = None
        for path, group in groupby(faces, key=lambda f: f[0]):
            named = [NamedFace(name, box) for _, box, _, name in group]
            journal = _write_photo(store, Path(path), named, opts, out, journal)
        out["journal"] = journal and str(journal.path)
    return out


def _write_photo(store: FaceIndex, photo: Path, faces: list[NamedFace], opts: XmpExportOptions, out: dict,
                 journal: MoveJournal | None) -> MoveJournal | None:
    """Merge ``faces`` into the photo's sidecar (or the photo) and write it through the journal."""
    target = photo if opts.embed else sidecar_path(photo, opts.sidecar_name)
    try:
        frame = read_frame(photo)
        old = target.read_bytes() if target.exists() else None
        merged = merge_regions(old if old is not None else EMPTY_PACKET, frame, faces, same_face)
    except (OSError, ValueError) as e:  # a photo gone or unreadable, XMP we cannot parse: left alone
        out["skipped"].append({"path": str(target), "error": one_line(e)})
        return journal
    if merged.data == old:
        out["unchanged"] += 1
        return journal
    if journal is None:  # created on the first write: a run that changes nothing leaves no journal
        journal = MoveJournal.create(journal_dir(opts.index), "write-xmp", {"index": str(opts.index)})
    created = journal.write(target, merged.data)["created"]
    out["files_written"] += 1
    out["files_created"] += int(created)
    out["regions_added"] += merged.added
    out["regions_updated"] += merged.updated
    out["regions_kept"] += merged.kept
    out["renamed"] += [{"path": str(target), **r} for r in merged.renamed]
    _record(store, photo, opts.embed)
    return journal


def _record(store: FaceIndex, photo: Path, embedded: bool) -> None:
    """What facesearch wrote itself is not news to the next ``index``: nothing is re-detected for it."""
    if embedded:
        st = stat_file(photo)
        store.touch_file(photo, st.size, st.mtime_ns, content_hash(photo))
    else:
        store.catalogue.set_sidecar_signature(photo, sidecar_signature(photo))
