"""HTML report for ``facesearch index``: the run summary, a sample of indexed photos with
their detected faces boxed, and the files that could not be read."""

from __future__ import annotations

import os

from facesearch.report.html import ImageCache, bad_files_section, boxed_photo, esc, fmt, img_tag, page, short_path, table, write_html

MAX_SAMPLE = 60
SAMPLE_SIZE = 280  # px, longest side of each sample photo
SUMMARY_KEYS = ("index", "scanned", "new", "updated", "unchanged", "bad", "noface", "faces", "pruned",
                "seconds", "files_per_s")


def render_index_html(summary, sample: list[dict], path: str | os.PathLike | None = None) -> str:
    """The report for an indexing run; written atomically to ``path`` if given.

    ``summary`` is an ``IndexSummary`` or its ``to_dict()``; ``sample`` is
    ``[{"path", "boxes": [[x1, y1, x2, y2], ...]}]``.
    """
    s = summary.to_dict() if hasattr(summary, "to_dict") else dict(summary)
    rows = [(k, fmt(s[k], 2)) for k in SUMMARY_KEYS if k in s]
    cache = ImageCache(max_items=2)  # every sample photo is a different file
    cells = "".join(_sample_cell(item, cache) for item in sample[:MAX_SAMPLE])
    more = f"<p class=\"muted\">showing {MAX_SAMPLE} of {len(sample)}</p>" if len(sample) > MAX_SAMPLE else ""
    body = ["<h2>Summary</h2>", table(rows, cls="summary"),
            f"<h2>Sample of indexed photos ({min(len(sample), MAX_SAMPLE)})</h2>",
            f"<div class=\"row\">{cells}</div>{more}", bad_files_section(s.get("bad_files") or [], say_none=True)]
    text = page("facesearch index report", "\n".join(body))
    if path is not None:
        write_html(path, text)
    return text


def _sample_cell(item: dict, cache: ImageCache) -> str:
    p = str(item.get("path", ""))
    boxes = item.get("boxes") or []
    photo, err = boxed_photo(cache, p, boxes, size=SAMPLE_SIZE)
    note = f"<br><span class=\"err\">{esc(err)}</span>" if err else ""
    return (f"<div class=\"card sample\" style=\"width:{SAMPLE_SIZE + 4}px\">{img_tag(photo, cls='sample', alt=p)}"
            f"<br>{len(boxes)} face(s) · <span title=\"{esc(p, quote=True)}\">{esc(short_path(p))}</span>{note}</div>")
