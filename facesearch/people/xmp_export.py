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

from facesearch.core.errors import DataError, FacesearchError, one_line
from facesearch.core.journal import MoveJournal
from facesearch.core.paths import journal_dir
from facesearch.core.safe_write import check_writable
from facesearch.faces.face import iou
from facesearch.indexing.regions import REGION_IOU
from facesearch.photos.scan import content_hash, stat_file
from facesearch.photos.xmp import SIDECAR_NAMES, sidecar_path, sidecar_signature, stem_sharers
from facesearch.photos.xmp_frame import read_frame
from facesearch.photos.xmp_write import EMPTY_PACKET, MergeResult, NamedFace, merge_regions
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
    "regions_updated", "regions_kept", "renamed", "skipped", "collisions", "people", "faces"}``;
    ``journal`` is None when nothing was written. ``collisions`` lists the photos left alone because
    they would share one ``photo.xmp`` (``sidecar_name="stem"``): ``{"sidecar", "photos"}``.
    With ``embed`` every photo is checked first: one that cannot be written refuses the whole run
    (DataError), so it never stops part way.
    """
    if opts.sidecar_name not in SIDECAR_NAMES:
        raise DataError(f"unknown sidecar name {opts.sidecar_name!r}", hint=f"use one of {', '.join(SIDECAR_NAMES)}")
    out = {"journal": None, "files_written": 0, "files_created": 0, "unchanged": 0, "regions_added": 0,
           "regions_updated": 0, "regions_kept": 0, "renamed": [], "skipped": [], "collisions": [],
           "people": 0, "faces": 0}
    with FaceIndex.open(opts.index) as store:
        faces = catalogue.named_faces(store, opts.persons)
        out["people"], out["faces"] = len({f[2] for f in faces}), len(faces)
        photos = {Path(path): [NamedFace(name, box) for _, box, _, name in group]
                  for path, group in groupby(faces, key=lambda f: f[0])}
        if opts.embed:
            _check_embeddable(photos)
        elif opts.sidecar_name == "stem":
            photos = _without_collisions(photos, out)
        _write_all(store, photos, opts, out)
    return out


def _check_embeddable(photos: dict[Path, list[NamedFace]]) -> None:
    """Refuse before anything is written when any photo cannot take its regions (a symlink, read-only,
    a format exiv2 cannot write): a run that stopped half way would leave some photos named and not others."""
    problems = []
    for photo, faces in photos.items():
        if not os.path.lexists(photo):
            continue  # gone since it was indexed: nothing to write, skipped as in sidecar mode
        try:
            check_writable(photo)
            merge_regions(photo.read_bytes(), read_frame(photo), faces, same_face)
        except FacesearchError as e:
            problems.append(e.message)
        except (OSError, ValueError) as e:
            problems.append(f"cannot write XMP into {photo}: {one_line(e)}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}; nothing was written",
                        hint="leave those photos out (--person), fix them, or write sidecars instead (--sidecar)")


def _without_collisions(photos: dict[Path, list[NamedFace]], out: dict) -> dict[Path, list[NamedFace]]:
    """``photos`` less those whose ``photo.xmp`` another photo beside them would read too (``x.jpg`` and
    ``x.png``): a shared sidecar would hand one photo's names to the other. Each such group is listed."""
    shared = stem_sharers(list(photos))
    for photo, others in shared.items():
        out["skipped"].append({"path": str(photo), "error": "shares the sidecar "
                               f"{sidecar_path(photo, 'stem').name} with {', '.join(o.name for o in others)}"})
    groups = {tuple(sorted([p, *o])) for p, o in shared.items()}
    out["collisions"] = [{"sidecar": str(sidecar_path(g[0], "stem")), "photos": [str(p) for p in g]}
                         for g in sorted(groups)]
    return {p: f for p, f in photos.items() if p not in shared}


def _write_all(store: FaceIndex, photos: dict[Path, list[NamedFace]], opts: XmpExportOptions, out: dict) -> None:
    """Write each photo's XMP through one journal, made at the first write (a run that changes nothing
    leaves none); a failure part way says which journal puts back what was written before it."""
    journal = None
    for photo, faces in photos.items():
        target = photo if opts.embed else sidecar_path(photo, opts.sidecar_name)
        merged, old = _merge(photo, target, faces, out)
        if merged is None:
            continue
        if merged.data == old:
            out["unchanged"] += 1
            continue
        journal = journal or MoveJournal.create(journal_dir(opts.index), "write-xmp", {"index": str(opts.index)})
        out["journal"] = str(journal.path)
        try:
            _write(store, journal, photo, target, merged, opts, out)
        except FacesearchError as e:
            raise _stopped(e, journal, out["files_written"]) from e


def _merge(photo: Path, target: Path, faces: list[NamedFace], out: dict) -> tuple[MergeResult | None, bytes | None]:
    """The merged XMP for ``target`` and its old bytes; (None, None) and a skip when it cannot be read,
    or written (a sidecar that is a symlink or read-only: skipped here, so the run never stops half way)."""
    try:
        check_writable(target)
        frame = read_frame(photo)
        old = target.read_bytes() if target.exists() else None
        return merge_regions(old if old is not None else EMPTY_PACKET, frame, faces, same_face), old
    except (OSError, ValueError, FacesearchError) as e:  # a photo gone or unreadable, XMP we cannot parse
        out["skipped"].append({"path": str(target), "error": one_line(e)})
        return None, None


def _write(store: FaceIndex, journal: MoveJournal, photo: Path, target: Path, merged: MergeResult,
           opts: XmpExportOptions, out: dict) -> None:
    created = journal.write(target, merged.data)["created"]
    out["files_written"] += 1
    out["files_created"] += int(created)
    out["regions_added"] += merged.added
    out["regions_updated"] += merged.updated
    out["regions_kept"] += merged.kept
    out["renamed"] += [{"path": str(target), **r} for r in merged.renamed]
    _record(store, photo, opts.embed)


def _stopped(e: FacesearchError, journal: MoveJournal, written: int) -> FacesearchError:
    """The error of a write that failed part way, with the way back to before the run."""
    if not written:
        return e  # nothing changed: its own hint says what to do
    return FacesearchError(f"{e.message} (after {written} files were written)",
                           hint=f"`facesearch undo {journal.path}` puts those back; or fix it and run write-xmp again")


def _record(store: FaceIndex, photo: Path, embedded: bool) -> None:
    """What facesearch wrote itself is not news to the next ``index``: nothing is re-detected for it."""
    if embedded:
        st = stat_file(photo)
        store.touch_file(photo, st.size, st.mtime_ns, content_hash(photo))
    else:
        store.catalogue.set_sidecar_signature(photo, sidecar_signature(photo))
