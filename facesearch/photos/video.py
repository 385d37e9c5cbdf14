"""Decoding home videos (layer 1): a clip becomes a stream of sampled, upright RGB frames, or one typed error.

PyAV (FFmpeg's own decoders, in its wheels) reads every container and codec a phone writes: H.264 and HEVC,
8- and 10-bit, in MP4/MOV/M4V/3GP, Matroska/WebM and AVI. ``bench/video.py`` measured it against OpenCV's
reader on the same clips (``bench/results/video.json``): OpenCV applies no display matrix before 4.5 and
cannot skip the conversion of the frames it does not keep, PyAV converts only the sampled ones.

:func:`is_video` tells a clip from a photo by its first bytes, whatever its name says. :func:`sample_frames`
streams a clip (never the whole clip in memory): a frame is kept every ``every_s`` seconds of its own
timestamps (variable frame rates follow), plus every keyframe (encoders put one at each scene cut), each
turned upright by the stream's display matrix (phone clips are stored sideways). Like
:func:`facesearch.photos.load.load_image`, anything wrong with the file is one
:class:`~facesearch.core.errors.BadImageError`, raised before a frame is yielded where it can be.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from facesearch.core.errors import BadImageError, one_line
from facesearch.photos.load import file_problem, max_pixels_limit, regular_file_problem

log = logging.getLogger(__name__)

DEFAULT_EVERY_S = 0.5  # two samples a second: a face on screen for ~1 s is seen at least twice
# Frames decoded per second of declared duration, at most: a file whose timestamps never advance
# (hostile or broken) stops here instead of decoding for ever.
_MAX_DECODE_FPS = 480
NONREF_FROM_S = 0.2  # sampling this sparse or sparser skips decoding non-reference frames
_MAX_SECONDS = 6 * 3600  # declared durations past this are not believed: the frame budget uses it instead


def is_video(path: str | os.PathLike) -> bool:
    """Whether the file's first bytes are a video container's (ISO-BMFF/QuickTime, Matroska/WebM, AVI).

    A file that cannot be read is not a video (the photo path reports it).
    """
    try:
        with open(path, "rb", buffering=0) as fp:
            head = fp.read(16)
    except OSError:
        return False
    if len(head) < 12:
        return False
    if head[4:8] == b"ftyp":  # MP4, MOV, M4V, 3GP; HEIC/AVIF photos are ISO-BMFF too: their brands say so
        return head[8:12] not in _PHOTO_BRANDS
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # QuickTime without ftyp
        return True
    return head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


_PHOTO_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"hevc", b"hevx"})


@dataclass(frozen=True)
class VideoInfo:
    """What a clip is: display size (after rotation), duration, nominal frame rate, rotation, codec."""

    width: int
    height: int
    duration_s: float | None
    fps: float | None
    rotation: int  # degrees counter-clockwise the stored frames are turned to be shown
    codec: str


@dataclass
class Sample:
    """One sampled frame: its time in the clip, its upright RGB pixels, whether it was a keyframe."""

    time_s: float
    image: np.ndarray
    key: bool


def probe(path: str | os.PathLike) -> VideoInfo:
    """The clip's :class:`VideoInfo` without decoding a frame's pixels past the first."""
    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        first = next(_frames(container, stream, Path(path)), None)
        if first is None:
            raise _bad(Path(path), "no frame could be decoded", "re-copy or re-export the clip")
        return _info(container, stream, first)


def sample_frames(path: str | os.PathLike, every_s: float = DEFAULT_EVERY_S, keyframes: bool = True,
                  max_pixels: int | None = None) -> Iterator[Sample]:
    """Upright RGB frames of the clip at ``path``, one each ``every_s`` seconds (by timestamp) and each keyframe.

    Raises:
        BadImageError: not a regular file, empty, not a video, no video stream, too many pixels, or
            undecodable (a clip cut short mid-way ends where its data ends and is not an error).
    """
    path = Path(path)
    limit = max_pixels_limit(max_pixels)
    with _open(path) as container:
        stream = container.streams.video[0]
        _check_size(path, stream, limit)
        if every_s >= NONREF_FROM_S:
            # Frames nothing else refers to (B-frames) are not even decoded: half the decoding of a phone
            # clip (bench/video.py), and a sample is then at most a frame or two later than asked.
            stream.codec_context.skip_frame = "NONREF"
        budget = _frame_budget(container)
        next_t, n, decoded = 0.0, 0, 0
        for frame in _frames(container, stream, path):
            decoded += 1
            if decoded > budget:
                raise _bad(path, f"over {budget:,} frames for its duration", "re-export the clip")
            t = float(frame.time) if frame.time is not None else decoded / (float(stream.average_rate or 30))
            if t + 1e-6 < next_t and not (keyframes and frame.key_frame):
                continue
            n += 1
            next_t = _next_on_grid(next_t, t, every_s)
            yield Sample(round(max(t, 0.0), 3), upright(frame), bool(frame.key_frame))
        if n == 0:
            raise _bad(path, "no frame could be decoded", "re-copy or re-export the clip")


def _next_on_grid(next_t: float, t: float, every_s: float) -> float:
    """The next sampling time after a sample at ``t``: on the grid of ``every_s`` (a late sample, after
    skipped frames, does not push the grid), every frame when ``every_s`` is 0."""
    if every_s <= 0:
        return t
    while next_t <= t + 1e-6:
        next_t += every_s
    return next_t


def frame_at(path: str | os.PathLike, time_s: float) -> np.ndarray:
    """The upright RGB frame shown at ``time_s`` (the first at or after it; the last when past the end).

    Seeks to the keyframe before ``time_s`` and decodes from there: a thumbnail costs a few frames, not
    the clip. Raises BadImageError as :func:`sample_frames` does.
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        _check_size(path, stream, max_pixels_limit(None))
        if time_s > 0 and stream.time_base:
            try:
                container.seek(int(time_s / stream.time_base), stream=stream, backward=True)
            except Exception:  # an unseekable clip is read from its start
                container.seek(0)
        last = None
        for frame in _frames(container, stream, path):
            last = frame
            if frame.time is None or frame.time + 1e-3 >= time_s:
                break
        if last is None:
            raise _bad(path, "no frame could be decoded", "re-copy or re-export the clip")
        return upright(last)


def still(path: str | os.PathLike, time_s: float | None = None):
    """What a face is shown in: the photo at ``path``, or (``time_s`` given) the clip's frame then, as a
    Pillow RGB image."""
    from PIL import Image

    from facesearch.photos.load import load_image

    return load_image(path) if time_s is None else Image.fromarray(frame_at(path, time_s))


def upright(frame) -> np.ndarray:
    """A decoded frame as HxWx3 uint8 RGB (10-bit and HDR sources scaled to 8 bits), turned as shown."""
    img = frame.to_ndarray(format="rgb24")
    turns = (int(round(frame.rotation / 90.0)) % 4) if frame.rotation else 0
    # frame.rotation is counter-clockwise (FFmpeg's display matrix); np.rot90 turns counter-clockwise too.
    return np.ascontiguousarray(np.rot90(img, turns)) if turns else img


def _open(path: Path):
    """The container at ``path`` with a video stream, or BadImageError; checked before PyAV sees it."""
    import av  # a heavy import: only commands that meet a clip pay for it

    _check_regular(path)
    try:
        container = av.open(os.fspath(path), "r", timeout=30.0)
    except Exception as exc:  # PyAV's errors, OSError: the file's fault either way
        raise _classify(path, exc) from exc
    if not container.streams.video:
        container.close()
        raise _bad(path, "no video stream (audio only?)", "remove it from the collection")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # FFmpeg's frame threads: the decoder is never the slowest stage
    return container


def _frames(container, stream, path: Path):
    """Decoded frames; a corrupt packet mid-way ends the clip there (what came before is kept)."""
    import av

    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as exc:
        log.warning("%s: decoding stopped early (%s)", path, one_line(exc))
    except MemoryError as exc:
        raise _bad(path, "out of memory while decoding", "re-export the clip at a lower resolution") from exc


def _check_regular(path: Path) -> None:
    try:
        problem = regular_file_problem(path, "video")
    except OSError as exc:
        raise _classify(path, exc) from exc
    if problem is not None:
        raise _bad(path, *problem)


def _check_size(path: Path, stream, limit: int) -> None:
    w, h = stream.codec_context.width, stream.codec_context.height
    if w * h > limit:
        raise _bad(path, f"frames are {w}x{h} = {w * h:,} pixels, over the limit of {limit:,}",
                   "downscale it, or raise the limit with FACESEARCH_MAX_PIXELS")


def _frame_budget(container) -> int:
    seconds = container.duration / 1_000_000 if container.duration else _MAX_SECONDS
    return int(min(max(seconds, 1.0), _MAX_SECONDS) * _MAX_DECODE_FPS) + 1000


def _info(container, stream, first) -> VideoInfo:
    turned = bool(first.rotation) and (int(round(first.rotation / 90.0)) % 2 == 1)
    w, h = (first.height, first.width) if turned else (first.width, first.height)
    duration = container.duration / 1_000_000 if container.duration else None
    fps = float(stream.average_rate) if stream.average_rate else None
    return VideoInfo(w, h, duration, fps, int(first.rotation or 0), stream.codec_context.name)


def _bad(path: Path, reason: str, hint: str) -> BadImageError:
    return BadImageError(f"cannot read video {path}: {reason}", hint=hint)


def _classify(path: Path, exc: Exception) -> BadImageError:
    if (problem := file_problem(exc)) is not None:
        return _bad(path, *problem)
    return _bad(path, f"not a readable video ({one_line(exc)})", "re-copy or re-export the clip; it cannot be decoded")
