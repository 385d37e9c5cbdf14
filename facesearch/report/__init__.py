"""Visual reports: self-contained HTML pages and PNG contact sheets (no torch imported).

Each ``render_*_html`` returns the page as a string and, given a path, writes it
atomically. Unreadable images become placeholders; a report never crashes on them.
"""

from facesearch.report.dedupe import render_dedupe_html
from facesearch.report.evaluate import render_evaluate_html
from facesearch.report.index import render_index_html
from facesearch.report.people import render_people_html
from facesearch.report.query import render_query_html
from facesearch.report.sheet import dedupe_sheet, query_sheet

__all__ = ["render_query_html", "render_dedupe_html", "render_evaluate_html", "render_index_html", "render_people_html",
           "query_sheet", "dedupe_sheet"]
