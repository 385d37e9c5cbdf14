"""Clips' faces in the catalogue: the moment of each (``video_faces``, beside ``faces``).

A clip is a file like a photo; each face stored for it is one of a track's best and carries its time,
its track (one appearance of one person, numbered by start) and the track's start and end, in
seconds. The table is created by writers on open, like ``photo_hashes``; an index made before clips
were indexed has none and every face reads as a photo's.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable

from facesearch.store.records import Moment
from facesearch.store.sqlite import chunks, placeholders as qs


def write(db: sqlite3.Connection, rows: list[tuple[int, dict]]) -> None:
    """Record ``(face id, {"time_s", "track", "start_s", "end_s"})`` inside the caller's transaction."""
    db.executemany("INSERT INTO video_faces(face_id, time_s, track, start_s, end_s) VALUES (?, ?, ?, ?, ?)",
                   [(fid, float(m["time_s"]), int(m["track"]), float(m["start_s"]), float(m["end_s"]))
                    for fid, m in rows])


def read(db: sqlite3.Connection, face_ids: Iterable[int] | None = None) -> dict[int, Moment]:
    """The moments of those of ``face_ids`` that are clips' faces; of every clip's face when None (the
    table holds a few faces per track, so whole-index passes read it once instead of asking per face)."""
    sql = "SELECT face_id, time_s, track, start_s, end_s FROM video_faces"
    try:
        if face_ids is None:
            return {r[0]: Moment(*r[1:]) for r in db.execute(sql)}
        out: dict[int, Moment] = {}
        for c in chunks(sorted({int(f) for f in face_ids})):
            out |= {r[0]: Moment(*r[1:]) for r in db.execute(f"{sql} WHERE face_id IN ({qs(c)})", c)}
        return out
    except sqlite3.OperationalError:  # an index from before clips (opened read-only): photos only
        return {}
