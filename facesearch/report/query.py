"""HTML report for ``facesearch query``: each query photo with its faces boxed, and per face
its crop, the predicted identity and its nearest indexed faces."""

from __future__ import annotations

import os
from pathlib import Path

from facesearch.report.html import (
    BOX_COLOURS, THUMB, ImageCache, boxed_photo, esc, face_thumb, fmt, img_tag, page, short_path, write_html,
)
from facesearch.search.moments import span


def render_query_html(results: list[dict], path: str | os.PathLike | None = None) -> str:
    """The report for ``facesearch.search.query.query()`` results; written atomically to ``path`` if given.

    A result may carry ``"error"`` instead of faces (e.g. no face found); it is
    shown, not raised.
    """
    cache = ImageCache()
    n_faces = sum(len(r.get("faces") or []) for r in results)
    body = f"<p>{len(results)} query photo(s), {n_faces} face(s).</p>\n"
    body += "\n".join(_query_block(r, n, cache) for n, r in enumerate(results, 1))
    text = page("facesearch query results", body)
    if path is not None:
        write_html(path, text)
    return text


def _query_block(result: dict, n: int, cache: ImageCache) -> str:
    qpath = str(result.get("query", ""))
    faces = result.get("faces") or []
    photo, err = boxed_photo(cache, qpath, [f["box"] for f in faces])
    parts = [f"<div class=\"card query\"><h2>Query {n}: {esc(Path(qpath).name)}</h2>",
             f"<p class=\"muted\">{esc(qpath)}</p>", img_tag(photo, cls="photo", alt=qpath)]
    if result.get("error") or err:  # the search's own error explains more than the preview's
        parts.append(f"<p class=\"err\">{esc(str(result.get('error') or err))}</p>")
    elif not faces:
        parts.append("<p class=\"muted\">no face found</p>")
    parts += [_face_row(f, k, qpath, cache) for k, f in enumerate(faces, 1)]
    parts.append("</div>")
    return "\n".join(parts)


def _face_row(face: dict, k: int, qpath: str, cache: ImageCache) -> str:
    """A face's crop with its answer in words (``verdict.py``); the raw figures behind a details toggle."""
    crop, _ = face_thumb(cache, qpath, face.get("box"))
    ident = face.get("identity")
    badge = (f"<span class=\"badge ident\">{esc(str(ident))}</span>" if ident
             else "<span class=\"badge unknown\">unknown</span>")
    words = esc(face.get("verdict_text") or (str(ident) if ident else "unknown"))
    numbers = (f"distance {fmt(face.get('distance'))}<br>FAR {fmt(face.get('far'))}<br>margin {fmt(face.get('margin'))}"
               f"<br>detector score {fmt(face.get('score'))}<br>quality {fmt(face.get('quality'))}")
    info = (f"<span class=\"verdict\">{words}</span><br><span class=\"muted\">{esc(face.get('error_rate') or '')}"
            f"</span><details><summary>numbers</summary>{numbers}</details>")
    colour = BOX_COLOURS[(k - 1) % len(BOX_COLOURS)]  # the colour of its box on the photo
    head = (f"<div class=\"cell\">{img_tag(crop, cls='face', alt=f'face {k}', border=colour)}"
            f"<b>face {k}</b> {badge}<br>{info}</div>")
    me = os.path.realpath(qpath)  # an indexed query photo finds itself: not a match worth showing
    matches = [m for m in face.get("matches") or [] if os.path.realpath(str(m.get("path", ""))) != me]
    cells = [_match_cell(m, r, cache) for r, m in enumerate(matches, 1)]
    if not cells:
        cells = ["<div class=\"muted\">no indexed faces</div>"]
    return f"<h3>Face {k}</h3><div class=\"row face-row\">{head}{''.join(cells)}</div>"


MATCH_WORDS = {"very likely": "very likely the same", "likely": "likely the same", "": "probably not"}


def _match_cell(m: dict, rank: int, cache: ImageCache) -> str:
    thumb, err = face_thumb(cache, m.get("path", ""), m.get("box"), time_s=m.get("time_s"))
    label = m.get("label")
    mpath = str(m.get("path", ""))
    words = MATCH_WORDS.get(m.get("verdict") or "", "")
    caption = (f"#{rank} {esc(str(label)) if label else '<span class=muted>no label</span>'}"
               + (f"<br>{words}" if "verdict" in m else "")
               + f"<br><details><summary>numbers</summary>d={fmt(m.get('distance'))}<br>"
                 f"sim={fmt(m.get('similarity'))}</details>"
               f"<br><span title=\"{esc(mpath, quote=True)}\">{esc(short_path(mpath))}</span>")
    if err:
        caption += f"<br><span class=\"err\">{esc(err)}</span>"
    return f"<div class=\"cell match\">{img_tag(thumb, cls='match', alt=mpath)}{caption}{_player(m)}</div>"


def _player(m: dict) -> str:
    """A clip's hit: its moment, and the clip itself from that moment (a ``<video>`` with a time fragment)."""
    if m.get("start_s") is None:
        return ""
    try:
        uri = Path(str(m["path"])).resolve().as_uri()
    except ValueError:  # a name that is no URI (not UTF-8): the moment in words only
        return f"<br><b>{esc(span(m))}</b>"
    src = f"{uri}#t={float(m['start_s']):.2f},{float(m['end_s']):.2f}"
    return (f"<br><b>{esc(span(m))}</b><br><video class=\"clip\" controls preload=\"none\" width=\"{THUMB}\" "
            f"src=\"{esc(src, quote=True)}\"></video>")
