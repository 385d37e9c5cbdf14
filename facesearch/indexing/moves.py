"""Which indexed record a path the index does not know belongs to: the same file under another
path, or a photo that moved.

- **The same file** (:func:`same_file_as`): a hard link, a bind mount, or an alias that an index
  made before paths were resolved stored. It is not indexed again (one file is one photo).
- **A move** (:func:`moved_from`, :func:`take_over`): an indexed photo whose path is gone and whose
  content hash the new path has; the new path takes over its row -- faces, labels, people, nothing
  re-embedded. ``watch`` does this for renames and moved folders, ``index`` for a photo found at a
  new path while its old one is gone.

Only a file with the same content can be either, so the content hash narrows both searches.
"""

from __future__ import annotations

import os

from facesearch.core.paths import same_file
from facesearch.photos.scan import FileStat
from facesearch.photos.xmp import sidecar_signature
from facesearch.store.face_index import FaceIndex


def same_file_as(store: FaceIndex, path: str | os.PathLike, digest: str | None) -> str | None:
    """The indexed path that is this very file under another name, if any."""
    if digest is None:
        return None
    return next((q for q in store.catalogue.paths_with_hash(digest) if same_file(q, path)), None)


def moved_from(store: FaceIndex, digest: str | None) -> str | None:
    """The indexed path a new file with content ``digest`` came from: same hash, no longer on disk."""
    if digest is None:
        return None
    return next((q for q in store.catalogue.paths_with_hash(digest) if not os.path.exists(q)), None)


def take_over(store: FaceIndex, old: str, new: str, st: FileStat) -> bool:
    """Hand ``old``'s record to ``new``; its sidecars count as read when they moved with it unchanged
    (a changed one leaves the signature apart, so the photo is read again)."""
    before = store.catalogue.sidecar_signature(old)
    if not store.catalogue.move_file(old, new, st.size, st.mtime_ns):
        return False
    after = sidecar_signature(new)
    if _stamps(before) == _stamps(after):
        store.catalogue.set_sidecar_signature(new, after)
    return True


def _stamps(signature: str) -> list[str]:
    """A sidecar signature without the file names (a renamed photo's sidecar is renamed too)."""
    return sorted(part.split(":", 1)[1] for part in signature.split(";") if ":" in part)
