"""The records an index stores and answers with: files, faces, updates, search hits.

Plain dataclasses with no SQL: :class:`~facesearch.store.face_index.FaceIndex` takes
:class:`FileUpdate` and :class:`FaceRecord` in and gives :class:`FileRecord`,
:class:`FaceRow` and :class:`Match` out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

STATUSES = ("ok", "bad", "noface")


@dataclass(frozen=True)
class FileRecord:
    """One indexed file as last seen: the incremental-indexing key is (size, mtime_ns, hash)."""

    id: int
    path: str
    size: int | None
    mtime_ns: int | None
    hash: str | None
    status: str
    error: str | None
    n_faces: int
    label: str | None
    indexed_at: float | None
    run_id: int | None


@dataclass
class FaceRecord:
    """A detected face to store (any object with ``box``/``score``/``landmarks`` works too)."""

    box: tuple[float, float, float, float]
    score: float | None = None
    landmarks: Any = None
    label: str | None = None
    moment: dict | None = None  # a clip's face: {"time_s", "track", "start_s", "end_s"}; None: a photo's


@dataclass
class FileUpdate:
    """One file's new state for :meth:`FaceIndex.write_batch` (a dict with these keys works too)."""

    path: str
    size: int | None
    mtime_ns: int | None
    hash: str | None = None
    status: str = "ok"
    error: str | None = None
    faces: Sequence[Any] = field(default_factory=list)
    embeddings: Any = None  # (len(faces), dim) float32
    label: str | None = None  # file-level label; None keeps the existing one
    dhash: int | None = None  # the whole photo's difference hash (imageio.dhash), for near-duplicate photos
    sidecars: str | None = None  # its XMP sidecars' size+mtime (photos.xmp.sidecar_signature); None keeps the stored


@dataclass(frozen=True)
class Match:
    """A search hit. ``label`` is the face's label, else its file's label."""

    face_id: int
    distance: float
    path: str
    box: tuple[float, float, float, float]
    label: str | None

    @property
    def similarity(self) -> float:
        """Cosine similarity of the two unit embeddings: 1 - d^2/2."""
        return 1.0 - self.distance * self.distance / 2.0


@dataclass(frozen=True)
class Moment:
    """Where a clip's face is: its time, its track (one appearance), the track's start and end (seconds)."""

    time_s: float
    track: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class FaceRow:
    """A stored face with its file. ``label`` is the face's label, else its file's label."""

    face_id: int
    file_id: int
    path: str
    box: tuple[float, float, float, float]
    score: float | None
    landmarks: Any
    label: str | None
    size: int | None
    mtime_ns: int | None


def as_update(item: FileUpdate | dict) -> FileUpdate:
    """A :class:`FileUpdate` from itself or from a dict of its fields."""
    return item if isinstance(item, FileUpdate) else FileUpdate(**item)


def as_face(f: Any) -> FaceRecord:
    """A :class:`FaceRecord` from itself, a dict of its fields, or a detection with ``box``/``score``."""
    if isinstance(f, FaceRecord):
        return f
    if isinstance(f, dict):
        return FaceRecord(**f)
    return FaceRecord(tuple(f.box), getattr(f, "score", None), getattr(f, "landmarks", None),
                      getattr(f, "label", None), getattr(f, "moment", None))
