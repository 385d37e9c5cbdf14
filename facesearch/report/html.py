"""Shared building blocks for the self-contained HTML reports.

Every picture is inlined as a base64 JPEG/PNG data URI and the CSS is inline,
so a report is one file that opens offline in any browser. Image problems
never raise: a missing or unreadable file becomes a grey placeholder tile that
shows the error text.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont

from facesearch.core.atomic import atomic_write_bytes
from facesearch.core.errors import FacesearchError

THUMB = 112  # px, longest side of a face thumbnail
MAX_UPSCALE = 4.0  # small faces are enlarged to the thumbnail size, up to this factor
PHOTO = 480  # px, longest side of a whole-photo preview
JPEG_QUALITY = 85
FACE_MARGIN = 0.25  # extra context around a face box, as a fraction of its size
BOX_COLOURS = ((230, 60, 60), (40, 160, 255), (60, 200, 90), (250, 190, 30), (200, 90, 230), (20, 200, 200))

esc = html.escape

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 8px} h2{font-size:18px;margin:24px 0 8px} h3{font-size:15px;margin:12px 0 6px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:left}
th{background:#f0f0f0} .num{text-align:right;font-variant-numeric:tabular-nums}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 12px;margin:10px 0}
.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.cell{width:124px;font-size:11px;line-height:1.35;word-break:break-all}
.cell img{display:block;border:2px solid #ccc;border-radius:4px;max-width:116px}
.cell.keeper img{border-color:#2a9d3a} .badge{display:inline-block;padding:0 5px;border-radius:3px;font-size:11px}
.keep{background:#2a9d3a;color:#fff} .unknown{background:#999;color:#fff} .ident{background:#1769c2;color:#fff}
.err{color:#b00020} .muted{color:#777} .photo{max-width:100%;border:1px solid #ccc}
.summary td:first-child{font-weight:600}
"""


# ----------------------------------------------------------------------------- text


def fmt(value, digits: int = 4) -> str:
    """A number for display ("–" for None); ints as is, floats to ``digits`` places."""
    if value is None:
        return "–"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def page(title: str, body: str, script: str = "") -> str:
    """A complete HTML document: inline CSS, no external references."""
    js = f"<script>{script}</script>" if script else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
            f"<body>\n<h1>{esc(title)}</h1>\n{body}\n{js}</body></html>\n")


def table(rows: Iterable[Sequence], header: Sequence[str] | None = None, cls: str = "") -> str:
    """An HTML table of already-formatted cell values (escaped here)."""
    head = "<tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class=\"{esc(cls)}\">{head}{body}</table>"


def write_html(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))
    return Path(path)


# ----------------------------------------------------------------------------- images


def font(size: int = 12) -> ImageFont.ImageFont:
    """PIL's bundled font at ``size`` (a fixed-size bitmap on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


class ImageCache:
    """Decoded photos by path, a few at a time (matches often repeat a file); errors cached too."""

    def __init__(self, max_items: int = 8):
        self.max_items = max_items
        self._items: OrderedDict[str, Image.Image | str] = OrderedDict()

    def get(self, path, time_s: float | None = None) -> Image.Image | str:
        """The RGB image (a clip's frame at ``time_s``), or the error text when it cannot be read."""
        key = str(path) if time_s is None else f"{path}\x00{time_s}"
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = _load(str(path), time_s)
        self._items[key] = value
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return value


def _load(path: str, time_s: float | None = None) -> Image.Image | str:
    # Imported here: photos.load is light, but keeping the report import cheap matters for the CLI.
    from facesearch.photos.video import still

    try:
        return still(path, time_s)
    except FacesearchError as e:
        return e.message
    except Exception as e:  # a report must never crash on one odd file
        return f"{type(e).__name__}: {e}"


def placeholder(text: str, size: int = THUMB) -> Image.Image:
    """A grey square tile with ``text`` wrapped inside (for missing or unreadable images)."""
    img = Image.new("RGB", (size, size), (200, 200, 200))
    draw = ImageDraw.Draw(img)
    f = font(10)
    lines = textwrap.wrap(text, width=max(8, size // 6))[: max(1, size // 12 - 1)]
    draw.multiline_text((4, 4), "\n".join(lines), fill=(90, 20, 20), font=f, spacing=1)
    return img


def crop_face(img: Image.Image, box, margin: float = FACE_MARGIN) -> Image.Image:
    """``box`` (x1, y1, x2, y2) grown by ``margin`` on each side, clamped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(img.width, int(round(x2 + mx))), min(img.height, int(round(y2 + my)))
    if right <= left or bottom <= top:
        raise ValueError(f"box {list(box)} lies outside the {img.width}x{img.height} image")
    return img.crop((left, top, right, bottom))


def fit(img: Image.Image, size: int, max_up: float = 1.0) -> Image.Image:
    """A copy scaled to ``size`` on its longest side, enlarged by at most ``max_up``."""
    scale = min(size / max(img.size), max_up)
    if scale == 1.0:
        return img.copy()
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    return img.resize((w, h), Image.LANCZOS if scale < 1 else Image.BICUBIC)


def short_path(path, parts: int = 2) -> str:
    """The last ``parts`` components of ``path`` ("person_03/002.jpg"): enough to tell files apart."""
    return "/".join(Path(str(path)).parts[-parts:])


def face_thumb(cache: ImageCache, path, box=None, size: int = THUMB,
               time_s: float | None = None) -> tuple[Image.Image, str | None]:
    """Thumbnail of the face ``box`` in ``path`` (the whole photo when ``box`` is None).

    Small faces are enlarged (up to ``MAX_UPSCALE``) so every thumbnail in a row
    has the same size. Returns ``(image, error)``; on any problem the image is a placeholder and
    ``error`` says why. ``time_s``: the face is a clip's, in its frame at that time.
    """
    src = cache.get(path, time_s)
    if isinstance(src, str):
        return placeholder(src, size), src
    try:
        return fit(crop_face(src, box) if box else src, size, MAX_UPSCALE), None
    except (ValueError, TypeError) as e:
        return placeholder(str(e), size), str(e)


def boxed_photo(cache: ImageCache, path, boxes, size: int = PHOTO) -> tuple[Image.Image, str | None]:
    """The photo downscaled to ``size`` with each box drawn and numbered 1, 2, ..."""
    src = cache.get(path)
    if isinstance(src, str):
        return placeholder(src, min(size, THUMB)), src
    img = fit(src, size, max_up=2.0)
    draw_boxes(img, [[v * img.width / src.width for v in b] for b in boxes])
    return img, None


def draw_boxes(img: Image.Image, boxes, labels: Sequence[str] | None = None) -> None:
    """Draw numbered rectangles on ``img`` in place (colours cycle)."""
    draw = ImageDraw.Draw(img)
    f = font(14)
    width = max(2, round(max(img.size) / 240))
    for n, box in enumerate(boxes):
        colour = BOX_COLOURS[n % len(BOX_COLOURS)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        tag = labels[n] if labels else str(n + 1)
        tx, ty = x1 + width, (y1 - 17 if y1 >= 17 else y1 + width)  # above the box when there is room
        l, t, r, b = draw.textbbox((tx, ty), tag, font=f)
        draw.rectangle((l - 2, t - 1, r + 2, b + 1), fill=colour)
        draw.text((tx, ty), tag, fill=(255, 255, 255), font=f)


def data_uri(img: Image.Image, fmt_: str = "JPEG", quality: int = JPEG_QUALITY) -> str:
    """``data:image/...;base64,...`` for ``img`` (JPEG by default, PNG for plots)."""
    buf = io.BytesIO()
    if fmt_ == "JPEG":
        img.convert("RGB").save(buf, "JPEG", quality=quality, optimize=True)
    else:
        img.save(buf, fmt_)
    mime = "jpeg" if fmt_ == "JPEG" else fmt_.lower()
    return f"data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def png_uri(png: bytes) -> str:
    """Data URI for PNG bytes already encoded (matplotlib figures)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(img: Image.Image, cls: str = "thumb", alt: str = "", title: str = "", border=None) -> str:
    """An ``<img>`` with the picture inlined; ``alt``/``title`` are escaped; ``border`` an RGB colour."""
    style = f" style=\"border-color:rgb{tuple(border)}\"" if border else ""
    return (f"<img class=\"{esc(cls)}\" src=\"{data_uri(img)}\" width=\"{img.width}\" height=\"{img.height}\" "
            f"alt=\"{esc(alt, quote=True)}\" title=\"{esc(title or alt, quote=True)}\"{style}>")


def bad_files_section(bad: list[dict], say_none: bool = False) -> str:
    """The "Unreadable files" table shared by the index and evaluate reports."""
    if not bad:
        return "<h2>Unreadable files</h2><p class=\"muted\">none</p>" if say_none else ""
    rows = [(b.get("path", ""), b.get("error", "")) for b in bad]
    return f"<h2>Unreadable files ({len(bad)})</h2>" + table(rows, header=("path", "error"))
