"""``facesearch serve``: the index behind a local HTTP API and a web page (FastAPI, layer 6).

The detector and the model load once (:class:`facesearch.search.query.Searcher`); every request opens
the index read-only, so faces a CLI ``index`` run commits meanwhile are found without a restart.
Answers are the library's own JSON (``POST /api/query`` is ``query --json`` for one photo).

The app is assembled here from its parts: ``routes_query`` (page, health, query, thumbnails),
``routes_people`` (people and their corrections), ``routes_dedupe`` (duplicates, moving copies
away, undo), ``routes_index`` (index jobs, run one at a time by
``jobs``), request bodies and uploads in ``bodies``, and in front of them all ``security``: the
``Host`` allow-list, the token, same-origin and content-type checks (``docs/security.md``), and
``headers``: no framing, no inline code, on every answer. ``logs`` keeps the token out of the
server's log. The CLI binds 127.0.0.1 unless told otherwise, and refuses any other address without a token. Errors
are JSON ``{"error", "hint"}`` with the CLI's one-line messages.
"""

from __future__ import annotations

from fastapi import FastAPI

from facesearch.core.errors import DataError
from facesearch.search.query import Searcher
from facesearch.service import routes_dedupe, routes_index, routes_people, routes_query, security
from facesearch.service.state import ServeOptions, Service

ROUTES = (routes_query, routes_people, routes_dedupe, routes_index)  # every route of the app is in one of these


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if host not in security.LOOPBACK and not token:
        raise DataError(f"refusing to listen on {host} without a token: anyone who can reach it could search "
                        "and name faces", hint="pass --token (or set FACESEARCH_TOKEN), or bind 127.0.0.1")


def create_app(opts: ServeOptions, searcher: Searcher | None = None) -> FastAPI:
    """The service for one index (the model loads here, once)."""
    app = FastAPI(title="facesearch", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = Service(opts, searcher or Searcher(opts.index, opts.weights, opts.detector, opts.device))
    # Bound to every address (behind a token, check_bind): any IP literal names us; DNS names must be listed.
    any_ip = opts.host.strip("[]") in security.WILDCARD
    security.install(app, security.host_names(opts.host, opts.allow_hosts), any_ip, opts.token)
    for module in ROUTES:
        app.include_router(module.router)
    return app
