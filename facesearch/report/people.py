"""HTML report for ``facesearch people``: each person a grid of face thumbnails with its count,
named people first within equal sizes, unassigned faces last."""

from __future__ import annotations

import os

from facesearch.report.dedupe import LOADED_THUMBS_JS
from facesearch.report.html import ImageCache, esc, face_thumb, img_tag, page, short_path, table, write_html

MAX_PEOPLE = 300  # keeps the page a few MB on a large collection; --json lists everyone
MAX_FACES = 40  # thumbnails per person


def render_people_html(result: dict, path: str | os.PathLike | None = None, max_people: int = MAX_PEOPLE,
                       max_faces: int = MAX_FACES) -> str:
    """The report for ``facesearch.people.persons.people()``; written atomically to ``path`` if given."""
    cache = ImageCache()
    people, unassigned = result.get("people") or [], result.get("unassigned") or []
    rows = [("people", len(people)), ("named", sum(1 for p in people if p.get("name"))),
            ("faces in people", sum(len(p["faces"]) for p in people)), ("unassigned faces", len(unassigned))]
    parts = ["<h2>Summary</h2>" + table(rows, cls="summary")]
    if len(people) > max_people:
        parts.append(f"<p class=\"muted\">showing the {max_people} largest of {len(people)} people</p>")
    for p in people[:max_people]:
        title = esc(str(p["name"])) if p.get("name") else "<span class=\"muted\">unnamed</span>"
        head = f"<h3>Person {p['id']}: {title} · {len(p['faces'])} faces</h3>"
        parts.append(f"<div class=\"card person\">{head}{_grid(p['faces'], cache, max_faces)}</div>")
    if unassigned:
        parts.append(f"<div class=\"card person\"><h3>Unassigned: {len(unassigned)} faces</h3>"
                     f"{_grid(unassigned, cache, max_faces)}</div>")
    text = page("facesearch people", "\n".join(parts), script=LOADED_THUMBS_JS)
    if path is not None:
        write_html(path, text)
    return text


def _grid(faces: list[dict], cache: ImageCache, max_faces: int) -> str:
    cells = []
    for f in faces[:max_faces]:
        fpath = str(f.get("path", ""))
        thumb, err = face_thumb(cache, fpath, f.get("box"))
        caption = f"face {f.get('face_id')}<br><span title=\"{esc(fpath, quote=True)}\">{esc(short_path(fpath))}</span>"
        if err:
            caption += f"<br><span class=\"err\">{esc(err)}</span>"
        cells.append(f"<div class=\"cell\">{img_tag(thumb, cls='thumb', alt=fpath)}{caption}</div>")
    more = f"<p class=\"muted\">… and {len(faces) - max_faces} more</p>" if len(faces) > max_faces else ""
    return f"<div class=\"row\">{''.join(cells)}</div>{more}"
