"""Indexing a clip: sample → detect + align → embed → track → keep each track's best faces.

Runs in the process that holds the embedding model (tracking needs the embeddings of every sampled
face, and shipping chips to it would cost more than embedding them here). The decoder runs one frame
ahead in a thread (FFmpeg and the networks release the GIL), so a 2-core machine decodes while it
detects. Memory is a couple of frames plus a few faces per live track, whatever the clip's length.
A clip's result is a :class:`~facesearch.indexing.work.Result` like a photo's, embedded already,
each face with its moment (time, track, the track's start and end): both engines commit it the same way.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Iterable, Iterator

import numpy as np

from facesearch.faces.chips import make_chips
from facesearch.faces.detect import create_detector
from facesearch.indexing.video_tracks import LinkRule, Seen, Track, Tracker, kept_faces, moments
from facesearch.indexing.work import IndexOptions, Result, Work, guarded
from facesearch.photos.video import Sample, is_video, sample_frames

# The smallest face searched for in a clip, as a share of its frame's short side (60 px at 1080p,
# 27 px at 480p; never under --min-face): YuNet then looks at a ~540-line view of a 1080p frame, ~4x
# cheaper than the 20 px floor photos get (bench/video.py), and home-video faces are rarely smaller.
VIDEO_MIN_FACE_SHARE = 1 / 18
CUT_DIFF = 40.0  # mean absolute difference of 32x18 grey thumbnails (0-255) that reads as a scene cut


def split_videos(todo: list[Work]) -> tuple[list[Work], list[Work]]:
    """``(photos, clips)``: which path a file takes is decided by its first bytes, not its name."""
    clips = [w for w in todo if is_video(w.path)]
    names = {w.path for w in clips}
    return [w for w in todo if w.path not in names], clips


def link_rule(config, every_s: float = 0.5) -> LinkRule:
    """The tracker's thresholds from the model's calibration: its verification τ, its strict FAR 1e-3 τ
    and its quality gate (the one ``query`` names faces by). A face missed by one sample (a blink, a
    turn) does not end its track: the longest gap is three sampling intervals, 1.5 s at least."""
    c = config if isinstance(config, dict) else config.to_dict()
    tau = float(c.get("tau") or 0.8)
    strict = float(c.get("tau_far1e3") or tau * 0.85)
    return LinkRule(tau=tau, tau_strict=strict, max_gap_s=max(1.5, 3 * every_s),
                    quality_min=(c.get("calibration") or {}).get("quality_min"))


def clip_results(clips: Iterable[Work], opts: IndexOptions, engine) -> Iterator[Result]:
    """Each clip's :class:`Result`, embedded; bad clips as errors, unexpected failures as ``failed``."""
    detectors = _Detectors(opts, engine.config.align)
    for work in clips:
        yield index_clip(work, opts, engine, detectors)


def index_clip(work: Work, opts: IndexOptions, engine, detectors: "_Detectors | None" = None) -> Result:
    """One clip's faces (each track's best), their embeddings and their moments; a bad clip as a bad
    photo is (:func:`~facesearch.indexing.work.guarded`)."""
    detectors = detectors or _Detectors(opts, engine.config.align)
    return guarded(work, lambda: _result(work, *_track_clip(work.path, opts, engine, detectors)))


def _track_clip(path: str, opts: IndexOptions, engine, detectors: "_Detectors") -> tuple[list[Track], LinkRule]:
    rule = link_rule(engine.config, opts.video_every_s)
    tracker, tracks, prev = Tracker(rule), [], None
    for s in prefetched(sample_frames(path, opts.video_every_s)):
        seen = _seen(s, detectors.get(s.image.shape[:2]), engine)
        thumb = _thumb(s.image)
        cut = prev is not None and prev.shape == thumb.shape and float(np.abs(prev - thumb).mean()) > CUT_DIFF
        tracks += tracker.update(s.time_s, seen, cut)
        prev = thumb
    return sorted(tracks + tracker.finish(), key=lambda t: (t.start_s, t.id)), rule


def _seen(s: Sample, detector, engine) -> list[Seen]:
    """The faces of one sampled frame, embedded and rated."""
    faces = detector.detect(s.image)
    if not faces:
        return []
    emb, quality = engine.embed_with_quality(make_chips(s.image, faces, engine.config.align))
    rating = quality if quality is not None else [f.score * f.side for f in faces]
    return [Seen(s.time_s, f, e, float(q)) for f, e, q in zip(faces, emb, rating)]


def _result(work: Work, tracks: list[Track], rule: LinkRule) -> Result:
    faces, emb, times = [], [], []
    for n, t in enumerate(tracks):
        t.id = n  # numbered by start: track 0 is the first appearance
        keep = kept_faces(t, rule)
        faces += [s.face for s in keep]
        emb += [s.embedding for s in keep]
        times += moments(t, keep)
    dim = len(tracks[0].last.embedding) if tracks else 0
    return Result(work, faces=faces, embeddings=np.asarray(emb, np.float32).reshape(len(emb), dim),
                  moments=times)


def _thumb(img: np.ndarray) -> np.ndarray:
    """A 32x18 grey thumbnail of ``img`` (point samples of a strided view: a mean over a 1080p frame costs
    more than detecting in it): what a scene cut changes and a pan does not much."""
    h, w = img.shape[:2]
    ys, xs = np.linspace(0, h - 1, 18).astype(int), np.linspace(0, w - 1, 32).astype(int)
    small = img[ys][:, xs].astype(np.float32)
    return small.mean(axis=2) if small.ndim == 3 else small


class _Detectors:
    """One detector per frame size: the smallest face searched for follows the frame's short side."""

    def __init__(self, opts: IndexOptions, align: str):
        self.opts, self.align = opts, align  # the model's chips: whether dlib's landmarks are needed
        self.by_floor: dict[int, object] = {}

    def get(self, hw: tuple[int, int]):
        floor = video_min_face(hw, self.opts.min_face, self.opts.video_min_face)
        if floor not in self.by_floor:
            det = create_detector(self.opts.detector, min_face=floor, policy=self.opts.policy, align=self.align)
            # A frame without a face is the rule in a clip, not a face crop to read whole.
            self.by_floor[floor] = (dataclasses.replace(det, crop_fallback=False)
                                    if hasattr(det, "crop_fallback") else det)
        return self.by_floor[floor]


def video_min_face(hw: tuple[int, int], min_face: int | None, video_min_face_px: int | None) -> int:
    """The smallest face searched for in a frame of ``hw``: the one asked for, else a share of its short side."""
    if video_min_face_px is not None:
        return int(video_min_face_px)
    return max(int(min_face or 20), int(round(min(hw) * VIDEO_MIN_FACE_SHARE)))


def prefetched(items: Iterator, depth: int = 2) -> Iterator:
    """``items`` produced in a thread, at most ``depth`` ahead; its errors raised here, in order.

    Stopping early (an error here, or the consumer closing) stops the producer at its next item.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for it in items:
                if not _put(q, (None, it), stop):
                    return
            _put(q, (None, done), stop)
        except BaseException as e:  # handed to the consumer, which raises it where it would have been
            _put(q, (e, None), stop)

    th = threading.Thread(target=produce, name="facesearch-video-decode", daemon=True)
    th.start()
    try:
        while True:
            err, it = q.get()
            if err is not None:
                raise err
            if it is done:
                return
            yield it
    finally:
        stop.set()
        th.join(timeout=30)
        close = getattr(items, "close", None)
        if close is not None and not th.is_alive():
            close()


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
