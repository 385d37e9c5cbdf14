"""HTML report for ``facesearch dedupe``: one block per duplicate group, largest first,
member thumbnails side by side with the suggested keeper marked."""

from __future__ import annotations

import os

from facesearch.report.html import (
    ImageCache, esc, face_thumb, fmt, img_tag, page, short_path, table, write_html,
)

MAX_GROUPS = 300  # keeps a report over a huge collection a few MB; the JSON/CSV list them all
MAX_MEMBERS = 60  # per group

# The only script in any report: it lets a headless browser test read how many
# thumbnails actually decoded. The page does not need it.
LOADED_THUMBS_JS = (
    "window.addEventListener('load',function(){var n=0;"
    "document.querySelectorAll('img.thumb').forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});"
    "document.body.dataset.loadedThumbs=String(n);});"
)


def render_dedupe_html(report: dict, path: str | os.PathLike | None = None,
                       max_groups: int = MAX_GROUPS, max_members: int = MAX_MEMBERS) -> str:
    """The report for ``facesearch.search.dedupe.find_duplicates()``; written atomically to ``path`` if given.

    Every member thumbnail is an ``<img class="thumb">``: a face crop in face
    scope, the whole photo when the member has no box (photo scope).
    """
    cache = ImageCache()
    groups = sorted(report.get("groups") or [], key=lambda g: -len(g.get("members") or []))
    parts = [_summary(report, groups)]
    if len(groups) > max_groups:
        parts.append(f"<p class=\"muted\">showing the {max_groups} largest of {len(groups)} groups</p>")
    parts += [_group_block(g, n, cache, max_members) for n, g in enumerate(groups[:max_groups], 1)]
    parts.append(_exact_block(report.get("exact_duplicates") or [], cache))
    text = page("facesearch duplicates", "\n".join(parts), script=LOADED_THUMBS_JS)
    if path is not None:
        write_html(path, text)
    return text


def _summary(report: dict, groups: list[dict]) -> str:
    scope = report.get("scope", "faces")
    members = [m for g in groups for m in g.get("members") or []]
    rows = [("groups", fmt(report.get("n_groups", len(groups)))),
            (f"{scope} in groups", fmt(report.get("n_members", len(members)))),
            ("photos involved", len({m.get("path") for m in members})),
            ("pairs within τ", fmt(report.get("n_pairs"))),
            ("τ (L2 distance)", fmt(report.get("tau"))),
            ("scope", scope), ("keeper rule", report.get("keep", "–")),
            ("exact duplicate sets", len(report.get("exact_duplicates") or []))]
    return "<h2>Summary</h2>" + table(rows, cls="summary")


def _group_block(group: dict, n: int, cache: ImageCache, max_members: int) -> str:
    """A group in words (copies of one face or photo, which to keep and why); its distances behind a toggle."""
    members = group.get("members") or []
    keeper = group.get("keeper")
    head = f"<h3>Group {n}: {len(members)} members, copies of one another</h3>"
    cells = "".join(_member_cell(m, m.get("path") == keeper, cache) for m in members[:max_members])
    more = f"<p class=\"muted\">… and {len(members) - max_members} more</p>" if len(members) > max_members else ""
    why = f" ({esc(str(group['keeper_reason']))})" if group.get("keeper_reason") else ""
    keep = f"<p>suggested keeper: <b>{esc(str(keeper))}</b>{why}</p>" if keeper else ""
    numbers = (f"<details><summary>numbers</summary>max distance {fmt(group.get('max_distance'))}"
               f" · mean {fmt(group.get('mean_distance'))}</details>")
    return f"<div class=\"card group\">{head}<div class=\"row\">{cells}</div>{more}{keep}{numbers}</div>"


def _member_cell(m: dict, is_keeper: bool, cache: ImageCache) -> str:
    mpath = str(m.get("path", ""))
    thumb, err = face_thumb(cache, mpath, m.get("box"))
    lines = ["<span class=\"badge keep\">keep</span>" if is_keeper else ""]
    if m.get("distance") is not None:
        lines.append(f"d={fmt(m['distance'])}")
    if m.get("label"):
        lines.append(esc(str(m["label"])))
    lines.append(f"<span title=\"{esc(mpath, quote=True)}\">{esc(short_path(mpath))}</span>")
    if err:
        lines.append(f"<span class=\"err\">{esc(err)}</span>")
    cls = "cell keeper" if is_keeper else "cell"
    return f"<div class=\"{cls}\">{img_tag(thumb, cls='thumb', alt=mpath)}{'<br>'.join(x for x in lines if x)}</div>"


def _exact_block(exact: list[list[str]], cache: ImageCache) -> str:
    """Byte-identical files: one small preview (not a ``thumb``) and the paths of each set."""
    if not exact:
        return ""
    items = []
    for paths in exact[:MAX_GROUPS]:
        preview, _ = face_thumb(cache, paths[0], None, size=64) if paths else (None, None)
        pic = img_tag(preview, cls="xthumb", alt=str(paths[0])) if preview else ""
        items.append(f"<div class=\"card row\">{pic}<div>{'<br>'.join(esc(str(p)) for p in paths)}</div></div>")
    return f"<h2>Exact duplicates ({len(exact)} set(s) of byte-identical files)</h2>" + "".join(items)
