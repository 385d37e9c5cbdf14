"""The server's logs, without secrets: ``facesearch serve`` logs every request, and image URLs carry
the token as ``?token=…`` (an ``<img>`` cannot send a header), so its value is written as ``***``.

:func:`log_config` is uvicorn's own logging configuration with :class:`RedactTokens` on its loggers
(on the loggers, not a handler: whatever handler is added later sees only the redacted line).
"""

from __future__ import annotations

import copy
import logging
import re
from urllib.parse import unquote_plus

SECRET_PARAMS = ("token",)  # query parameters whose values never reach a log
_PARAM = re.compile(r"(?P<lead>[?&;])(?P<key>[^=&;#\s\"]*)=(?P<value>[^&;#\s\"]*)")


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced by ``***`` (its name may be
    percent-encoded: Starlette decodes ``%74oken`` to ``token`` too)."""
    def one(m: re.Match) -> str:
        secret = unquote_plus(m["key"]).lower() in SECRET_PARAMS
        return f"{m['lead']}{m['key']}=***" if secret else m[0]

    return _PARAM.sub(one, text) if "=" in text else text


class RedactTokens(logging.Filter):
    """Rewrites a record's message and arguments (uvicorn's access line passes the path as one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def log_config() -> dict:
    """uvicorn's ``LOGGING_CONFIG`` with :class:`RedactTokens` on its access and error loggers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    for name in ("uvicorn.access", "uvicorn.error"):
        config["loggers"].setdefault(name, {})["filters"] = ["redact_tokens"]
    return config
