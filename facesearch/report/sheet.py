"""PNG contact sheets: the query and dedupe reports as one picture (``--sheet FILE.png``).

A sheet is a list of rows; each row has a title line and cells (a picture with a
few caption lines) that flow left to right and wrap at the sheet width.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from facesearch.core.atomic import atomic_path
from facesearch.report.html import (
    BOX_COLOURS, THUMB, ImageCache, boxed_photo, face_thumb, fmt, font, short_path,
)

SHEET_WIDTH = 1000
PAD = 8
LINE = 13  # px per caption line
TITLE = 20  # px per row title
KEEP_GREEN = (42, 157, 58)
MAX_ROWS = 50  # about 8000 px tall at most, a few MB; the HTML/JSON hold everything


@dataclass
class Cell:
    image: Image.Image
    caption: list[str] = field(default_factory=list)
    frame: tuple[int, int, int] | None = None  # coloured border (keeper, face colour)


@dataclass
class Row:
    title: str
    cells: list[Cell] = field(default_factory=list)


def query_sheet(results: list[dict], path_png: str | os.PathLike) -> Path:
    """Contact sheet of ``facesearch.search.query.query()`` results, written atomically."""
    cache, rows = ImageCache(), []
    for n, r in enumerate(results, 1):
        qpath, faces = str(r.get("query", "")), r.get("faces") or []
        photo, err = boxed_photo(cache, qpath, [f["box"] for f in faces], size=2 * THUMB + PAD)
        note = r.get("error") or err or ("no face found" if not faces else f"{len(faces)} face(s)")
        rows.append(Row(f"query {n}: {qpath}", [Cell(photo, textwrap.wrap(str(note), photo.width // 6)[:3])]))
        rows += [_face_row(f, k, qpath, cache) for k, f in enumerate(faces, 1)]
    return save_sheet(rows, path_png)


def _face_row(face: dict, k: int, qpath: str, cache: ImageCache) -> Row:
    crop, _ = face_thumb(cache, qpath, face.get("box"))
    colour = BOX_COLOURS[(k - 1) % len(BOX_COLOURS)]
    cells = [Cell(crop, [f"face {k}", str(face.get("identity") or "unknown")], colour)]
    for rank, m in enumerate(face.get("matches") or [], 1):
        thumb, _ = face_thumb(cache, m.get("path", ""), m.get("box"))
        cells.append(Cell(thumb, [f"#{rank} d={fmt(m.get('distance'), 3)}", f"sim={fmt(m.get('similarity'), 3)}",
                                  str(m.get("label") or "-"), short_path(m.get("path", ""))]))
    return Row(f"face {k}: {face.get('identity') or 'unknown'}", cells)


def dedupe_sheet(report: dict, path_png: str | os.PathLike) -> Path:
    """Contact sheet of ``facesearch.search.dedupe.find_duplicates()`` groups, keeper framed green."""
    cache = ImageCache()
    groups = sorted(report.get("groups") or [], key=lambda g: -len(g.get("members") or []))
    rows = [Row(f"{len(groups)} groups, {report.get('n_members', '?')} {report.get('scope', 'faces')}, "
                f"tau = {fmt(report.get('tau'), 3)}, keep = {report.get('keep', '-')}")]
    for n, g in enumerate(groups, 1):
        cells = []
        for m in g.get("members") or []:
            keep = m.get("path") == g.get("keeper")
            thumb, _ = face_thumb(cache, m.get("path", ""), m.get("box"))
            cells.append(Cell(thumb, ["KEEP" if keep else "", short_path(m.get("path", ""))],
                              KEEP_GREEN if keep else None))
        rows.append(Row(f"group {n}: {len(cells)} members, max d = {fmt(g.get('max_distance'), 3)}", cells))
    return save_sheet(rows, path_png)


def save_sheet(rows: list[Row], path_png: str | os.PathLike, width: int = SHEET_WIDTH) -> Path:
    """Lay out ``rows`` (at most ``MAX_ROWS``) and write the PNG atomically."""
    if len(rows) > MAX_ROWS:
        rows = rows[:MAX_ROWS] + [Row(f"... {len(rows) - MAX_ROWS} more rows not shown")]
    sheet = compose(rows, width)
    with atomic_path(path_png) as tmp:
        sheet.save(tmp, format="PNG")  # optimize=True costs seconds and saves little on photos
    return Path(path_png)


def compose(rows: list[Row], width: int = SHEET_WIDTH) -> Image.Image:
    """Render rows onto one white image of ``width`` px, as tall as needed."""
    placed, height = _layout(rows, width)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    title_font, caption_font = font(14), font(11)
    for kind, x, y, item in placed:
        if kind == "title":
            draw.text((x, y), _short(item, width - 2 * PAD, 7), fill=(20, 20, 20), font=title_font)
        else:
            _draw_cell(sheet, draw, item, x, y, caption_font)
    return sheet


def _layout(rows: list[Row], width: int) -> tuple[list[tuple], int]:
    """Positions of every title and cell; returns them with the total height."""
    placed, y = [], PAD
    for row in rows:
        placed.append(("title", PAD, y, row.title))
        y += TITLE
        x, line_h = PAD, 0
        for cell in row.cells:
            w, h = _cell_size(cell)
            if x > PAD and x + w > width - PAD:  # wrap
                x, y, line_h = PAD, y + line_h + PAD, 0
            placed.append(("cell", x, y, cell))
            x, line_h = x + w + PAD, max(line_h, h)
        y += line_h + PAD
    return placed, y + PAD


def _cell_size(cell: Cell) -> tuple[int, int]:
    w = max(cell.image.width, THUMB) + 4
    return w, cell.image.height + 4 + LINE * len(cell.caption)


def _draw_cell(sheet: Image.Image, draw: ImageDraw.ImageDraw, cell: Cell, x: int, y: int, f) -> None:
    if cell.frame:
        draw.rectangle((x, y, x + cell.image.width + 3, y + cell.image.height + 3), fill=cell.frame)
    sheet.paste(cell.image, (x + 2, y + 2))
    w, _ = _cell_size(cell)
    for n, line in enumerate(cell.caption):
        draw.text((x + 2, y + cell.image.height + 4 + n * LINE), _short(line, w), fill=(40, 40, 40), font=f)


def _short(text: str, px: int, char_px: int = 6) -> str:
    """Cut ``text`` to about ``px`` pixels wide (keeps the end of long paths)."""
    n = max(4, px // char_px)
    text = str(text)
    return text if len(text) <= n else "…" + text[-(n - 1):]
