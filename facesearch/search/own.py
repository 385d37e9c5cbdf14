"""The query photo's own faces in the index: a photo searched for is never its own match, nor named
after itself (a labelled photo would otherwise answer with its own label, at distance 0).

A query given by path is an indexed photo when both are one file on disk: the same resolved path, or
the same device and inode (a symlinked alias, a bind mount, a hard link). A search by an indexed face
(the service's "search with this face") is that face's photo. Every face of that photo is left out,
not only the query's own: two faces of one photo are never one person. A byte-for-byte copy elsewhere
is another file, and stays a match (it is a duplicate the user may want to see).
"""

from __future__ import annotations

import os

from facesearch.core.paths import canonical, file_key
from facesearch.store.face_index import FaceIndex


class OwnPhoto:
    """``own(match)``: whether a match is a face of the query's own photo (or the query face itself)."""

    def __init__(self, path: str | os.PathLike | None, face: int | None = None):
        self.face = face
        self.real = canonical(path) if path is not None else None
        self.key = file_key(path) if path is not None else None  # stat'ed once, not per match
        self._seen: dict[str, bool] = {}  # per indexed path: a photo's faces share one stat

    def __call__(self, match) -> bool:
        if self.face is not None and match.face_id == self.face:
            return True
        if self.real is None:
            return False
        if match.path not in self._seen:
            key = file_key(match.path)
            self._seen[match.path] = canonical(match.path) == self.real or (key is not None and key == self.key)
        return self._seen[match.path]


def own_photo(store: FaceIndex, path: str | os.PathLike | None, face: int | None) -> OwnPhoto:
    """What to leave out of the matches of ``path`` (None for a decoded image), or of the indexed ``face``."""
    if face is not None:
        try:
            path = store.faces([face])[0].path
        except KeyError:
            pass  # not (or no longer) in the index: nothing of it can match
    return OwnPhoto(path, face)

