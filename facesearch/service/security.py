"""Who the service answers: the checks every request passes before a route sees it.

The service runs on the user's desktop, so every web page the user visits can send it requests,
and a page whose DNS name is rebound to 127.0.0.1 can even read the answers. Checked in order
(``docs/security.md`` has the threat model):

1. ``Host`` is a name the service answers to (loopback, the bound address, ``--allow-host``):
   else 421. A rebound name is not, so a foreign page never reads an answer.
2. With a token, every ``/api`` request carries it: else 401.
3. ``/api`` requests come from no page or from the service's own page: a foreign ``Origin``, or
   ``Sec-Fetch-Site`` saying cross-site/same-site, is 403.
4. Requests that change state are ``application/json`` or ``multipart/form-data``: else 415
   (a plain HTML form can send neither JSON nor a cross-origin multipart upload unseen).

No CORS headers are ever sent, so browsers keep foreign pages from reading answers.
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from facesearch.core.errors import (DataError, FacesearchError, IndexLockedError, IndexMissingError,
                                    NotFoundError)
from facesearch.service.bodies import media_type
from facesearch.service.headers import SECURITY_HEADERS, Hardening

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
BODY_TYPES = ("application/json", "multipart/form-data")
OWN_FETCH_SITES = ("same-origin", "none")  # "none": typed in the address bar, a bookmark


class Forbidden(FacesearchError):
    """A request the service will not serve as asked (a path outside the allowed roots)."""


def host_names(bound: str, extra=()) -> frozenset[str]:
    """The ``Host`` names the service answers to: loopback's, the bound address, and ``extra``."""
    return frozenset(n.strip("[]").lower() for n in (*LOOPBACK, bound, *extra) if n.strip("[]") not in WILDCARD)


def host_allowed(host_header: str, names: frozenset[str], any_ip: bool) -> bool:
    """Whether a ``Host`` header names this service. A DNS rebinding attack needs a *name*, so with
    ``any_ip`` (bound to every address, behind a token) any IP literal is fine too."""
    name = _host_name(host_header)
    if name in names:
        return True
    if not any_ip:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """``127.0.0.1:8750`` → ``127.0.0.1``, ``[::1]:8750`` → ``::1``, lower case (the port is not
    checked: the browser sends the port it connected to, and a port forward may change it)."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def foreign_origin(request: Request) -> str | None:
    """Why the request comes from another site's page, or None when it comes from ours or none."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in OWN_FETCH_SITES:
        return f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != request.headers.get("host", "").lower():
        return f"Origin: {origin}"
    return None


def has_token(request: Request, token: str) -> bool:
    """The token as ``Authorization: Bearer``, ``X-Facesearch-Token`` or ``?token=`` (image URLs)."""
    auth = request.headers.get("authorization", "")
    given = (auth[7:] if auth.lower().startswith("bearer ") else None) or request.headers.get("x-facesearch-token") \
        or request.query_params.get("token") or ""
    return hmac.compare_digest(given.encode(), token.encode())


class Guard:
    """ASGI middleware: :func:`refusal`'s answer, or the route. Pure ASGI, not ``@app.middleware``:
    Starlette's ``BaseHTTPMiddleware`` streams every answer through a task of its own, and the checks
    read only the request line and headers."""

    def __init__(self, app, names: frozenset[str], any_ip: bool, token: str | None):
        self.app, self.names, self.any_ip, self.token = app, names, any_ip, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            answer = refusal(Request(scope), self.names, self.any_ip, self.token)
            if answer is not None:
                return await answer(scope, receive, send)
        await self.app(scope, receive, send)


def refusal(request: Request, names: frozenset[str], any_ip: bool, token: str | None) -> JSONResponse | None:
    """The answer to a request that fails a check above, or None when it may go on."""
    if not host_allowed(request.headers.get("host", ""), names, any_ip):
        return _error(421, f"this service does not answer to the name {request.headers.get('host', '')!r}",
                      "open it as http://127.0.0.1:PORT/, or start serve with --allow-host NAME")
    if not request.url.path.startswith("/api"):
        return None
    if token and not has_token(request, token):
        return _error(401, "missing or wrong token", "send Authorization: Bearer TOKEN")
    why = foreign_origin(request)
    if why:
        return _error(403, f"refused a request from another site's page ({why})",
                      "the service answers its own page (/) and programs, not other web sites")
    if request.method not in SAFE_METHODS and media_type(request) not in BODY_TYPES:
        return _error(415, "send application/json or multipart/form-data",
                      f"got Content-Type {request.headers.get('content-type', 'none')!r}")
    return None


def install(app: FastAPI, names: frozenset[str], any_ip: bool, token: str | None) -> None:
    """Put the checks in front of every route, and every error into ``{"error", "hint"}`` JSON."""

    app.add_middleware(Guard, names=names, any_ip=any_ip, token=token)
    app.add_middleware(Hardening)  # added last, so outermost: the guard's refusals get the headers too

    app.add_exception_handler(FacesearchError, _library_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _bug)


def status(e: FacesearchError) -> int:
    """The HTTP status of a library error: every FacesearchError is the user's or the data's (a 4xx),
    400 unless it says more (the library raises plain FacesearchError for many a refusal)."""
    for kind, code in ((IndexMissingError, 404), (NotFoundError, 404), (IndexLockedError, 409), (Forbidden, 403)):
        if isinstance(e, kind):
            return code
    return 400


def _error(code: int, error: str, hint: str | None) -> JSONResponse:
    # The headers here too: a 500 is answered outside every middleware (Starlette's ServerErrorMiddleware).
    return JSONResponse({"error": error, "hint": hint}, status_code=code, headers=SECURITY_HEADERS)


async def _library_error(request: Request, e: FacesearchError) -> JSONResponse:
    return _error(status(e), e.message, e.hint)


async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
    return _error(e.status_code, str(e.detail), None)


async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
    where = "; ".join(f"{'.'.join(str(x) for x in err['loc'][1:]) or 'body'}: {err['msg']}" for err in e.errors())
    return _error(422, f"bad request: {where}", "see the README's Serve table for each call's fields")


async def _bug(request: Request, e: Exception) -> JSONResponse:  # still logged by the server, with its traceback
    return _error(500, f"unexpected {type(e).__name__}", "a bug in facesearch: the server's log has the details")


def confine(path: Path, roots, hint: str) -> Path | None:
    """``path`` resolved (symlinks and ``..`` followed) if it lies in or under one of ``roots``, else None:
    the one rule for every path a request names (folders to index, folders to move photos into).
    A path that cannot be resolved (a NUL byte, a symlink loop) is a DataError with ``hint``."""
    try:
        where = path.resolve()
    except (OSError, ValueError) as e:
        raise DataError(f"{str(path)!r} is not a usable path ({e})", hint=hint) from None
    for root in roots:
        base = Path(root).resolve()
        if where == base or base in where.parents:
            return where
    return None
