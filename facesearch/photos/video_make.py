"""Clips made in code from photos (layer 1): what the video tests and ``bench/video.py`` index.

A clip is a list of :class:`Shot`: one or two face photos panned or zoomed over a plain background for
some seconds; consecutive shots are hard cuts. :func:`write_clip` encodes it with PyAV (H.264, or
MPEG-4 part 2 where the wheel has no x264), optionally stored sideways with a display matrix as phones
do, in 10-bit, or with a variable frame rate, and returns when each shot is on screen: the truth the
tests check the index's moments against.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image


@dataclass
class Shot:
    """``faces`` (RGB arrays, one or two, each a photo of one person) on screen for ``seconds``."""

    faces: list
    seconds: float
    motion: str = "pan"  # pan | zoom | still
    names: tuple = ()  # who is in it, for the truth table
    height: float = 0.85  # each photo's height as a share of the frame's (at most: it fits its slot)


def write_clip(path: str | os.PathLike, shots: list[Shot], size: tuple[int, int] = (320, 240), fps: int = 10,
               rotate: int = 0, ten_bit: bool = False, vfr: bool = False, codec: str | None = None,
               preset: str = "veryfast") -> list[dict]:
    """Encode ``shots`` at ``path`` (``size`` as shown: width, height); ``[{"start_s", "end_s", "names"}]``.

    ``rotate``: degrees counter-clockwise the stored frames must be turned to be shown (the stream's
    display matrix), so the stored frames are sideways and the shown ones upright. ``preset``: x264's
    speed/size trade-off (a phone's hardware encoder is closest to the fast ones).
    """
    import av

    w, h = size if rotate % 180 == 0 else (size[1], size[0])
    with av.open(os.fspath(path), "w") as out:
        stream = _stream(out, codec, fps, w, h, ten_bit, vfr)
        if stream.codec_context.name == "libx264":
            stream.options = {"preset": preset}
        if rotate:
            stream.set_display_rotation(rotate)
        truth, t = [], 0.0
        for shot in shots:
            n, cache = max(1, int(round(shot.seconds * fps))), {}
            start = t
            for i in range(n):
                frame = np.rot90(_render(shot, i / max(n - 1, 1), size, cache), -(rotate // 90))
                t = _encode(out, stream, np.ascontiguousarray(frame), t, fps, vfr, ten_bit)
            truth.append({"start_s": round(start, 3), "end_s": round(t, 3), "names": list(shot.names)})
        for p in stream.encode():
            out.mux(p)
    return truth


def truncate(src: str | os.PathLike, dest: str | os.PathLike, keep: float = 0.5) -> None:
    """A copy of ``src`` cut after ``keep`` of its bytes: a clip whose copy was interrupted."""
    data = open(src, "rb").read()
    with open(dest, "wb") as fp:
        fp.write(data[: int(len(data) * keep)])


def _stream(out, codec: str | None, fps: int, w: int, h: int, ten_bit: bool, vfr: bool):
    import av

    name = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    stream = out.add_stream(name, rate=fps)
    stream.width, stream.height = w, h
    stream.pix_fmt = "yuv420p10le" if ten_bit else "yuv420p"
    if vfr:  # timestamps in milliseconds, set per frame
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
    return stream


def _encode(out, stream, frame: np.ndarray, t: float, fps: int, vfr: bool, ten_bit: bool) -> float:
    """Encode one frame shown at ``t``; the time of the next (a variable rate alternates 1/3 and 5/3 of a step)."""
    import av

    vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
    if ten_bit:
        vf = vf.reformat(format="yuv420p10le")
    step = 1.0 / fps
    if vfr:
        vf.pts = int(round(t * 1000))
        vf.time_base = Fraction(1, 1000)
        step *= (1 / 3) if int(round(t * fps * 3)) % 2 == 0 else (5 / 3)
    for p in stream.encode(vf):
        out.mux(p)
    return t + step


def _render(shot: Shot, f: float, size: tuple[int, int], cache: dict) -> np.ndarray:
    """The shot at ``f`` (0..1 through it): its faces side by side, moved or scaled with ``f``."""
    w, h = size
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = (70, 80, 90)
    slot = w // len(shot.faces)
    zoom = round(0.75 + 0.25 * f, 2) if shot.motion == "zoom" else 1.0  # 26 sizes: each resized once
    for k, face in enumerate(shot.faces):
        im = _resized(cache, face, slot, h, shot.height * zoom)
        room = max(slot - im.shape[1], 0)
        dx = int(room * f) if shot.motion == "pan" else room // 2
        y = (h - im.shape[0]) // 2
        canvas[y:y + im.shape[0], k * slot + dx:k * slot + dx + im.shape[1]] = im
    return canvas


def _resized(cache: dict, face, slot: int, h: int, share: float) -> np.ndarray:
    key = (id(face), slot, h, share)
    if key not in cache:
        im = Image.fromarray(np.asarray(face)).convert("RGB")
        s = min(slot / im.width, h / im.height, h * share / im.height)
        cache[key] = np.asarray(im.resize((max(1, int(im.width * s)), max(1, int(im.height * s))), Image.BILINEAR))
    return cache[key]
