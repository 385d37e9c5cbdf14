"""The face index: array operations over embeddings (:mod:`.ops`) and the on-disk store (:mod:`.store`).

``from facesearch.index import FaceIndex`` is the usual entry point.
"""

from facesearch.index.store import FaceIndex, FaceRecord, FaceRow, FileRecord, FileUpdate, Match

__all__ = ["FaceIndex", "FaceRecord", "FaceRow", "FileRecord", "FileUpdate", "Match"]
