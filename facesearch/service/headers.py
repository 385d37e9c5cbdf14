"""What every answer of the service says about itself to the browser, and ``HEAD`` answered as ``GET``.

A foreign page cannot read the service's answers (``security.py``), but it could *frame* the page
and trick the user into clicking its buttons (clickjacking: two clicks ran Undo, issue 37). So
every answer, errors included, forbids framing (``X-Frame-Options`` and CSP ``frame-ancestors``),
lets the page run only the script and style this service serves (``/app.js``, ``/app.css``: no
inline code, so an injected ``<script>`` would not run either), and neither sniffs content types
nor leaks the page's URL (its ``?token=``) as a referrer.
"""

from __future__ import annotations

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_RAW = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


class Hardening:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every response; ``HEAD`` routed as ``GET``, body dropped.

    Pure ASGI rather than ``@app.middleware``: it also sees the answers the checks in front of the
    routes give, and streams a thumbnail through unchanged.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        head = scope["method"] == "HEAD"
        if head:  # a copy: the server keeps its own scope saying HEAD, so it sends no body either
            scope = {**scope, "method": "GET"}

        async def send_hardened(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}  # error answers carry them already
                message = {**message, "headers": [*message.get("headers", []), *(h for h in _RAW if h[0] not in have)]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, send_hardened)
