"""The one output path of the CLI.

Data goes to stdout (a Rich table for people, JSON with ``--json``); progress,
logs and errors go to stderr. Exit codes: 0 ok, 1 user or data error, 2 usage
error (Typer's own). Tracebacks only with ``FACESEARCH_DEBUG=1``.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
from typing import Any, Callable, Iterable, Sequence

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from facesearch.core.errors import FacesearchError
from facesearch.core.extras import missing_extra
from facesearch.core.names import strip_hidden
from facesearch.core.paths import printable

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def stdout() -> Console:
    # Built per call so CliRunner's swapped sys.stdout is honoured.
    return Console(file=sys.stdout, soft_wrap=True)


def stderr() -> Console:
    return Console(file=sys.stderr, soft_wrap=True)


def debug_enabled() -> bool:
    return os.environ.get("FACESEARCH_DEBUG", "") not in ("", "0")


def emit_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout (plain print: no Rich markup or wrapping)."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__fspath__"):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def table(title: str | Text | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          compact: bool = False) -> Table:
    """A Rich table; title and cells are plain text (paths and labels are never read as markup).
    ``compact``: no side borders, so that more of an 80-column terminal is left to the cells."""
    t = Table(title=plain(title) if title is not None else None, show_lines=False,
              box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD, pad_edge=not compact)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[plain(_cell(v)) for v in r])
    return t


def plain(text: str | Text) -> Text:
    """``text`` as literal Rich text: ``[edited] me.jpg`` stays as it is, ``[link=…]`` is no link, and a
    file name's bytes that are not UTF-8 show escaped (``bad_\\xff.jpg``) instead of failing to print."""
    if isinstance(text, Text):  # built by a command; styled, but its words may still be a user's
        clean = safe(text.plain)
        return text if clean == text.plain else Text(clean)  # (styles go with the bytes; rare)
    return Text(safe(str(text)))


def safe(text: str) -> str:
    """User-supplied ``text`` (a name, a path) fit for a terminal: undecodable bytes escaped, and no
    escape sequence or control character (a stored ``ESC]8;;URL`` would be a live link) but newlines."""
    return strip_hidden(printable(text), keep="\n")


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def info(msg: str | Text, quiet: bool = False) -> None:
    """A message on stderr, as plain text."""
    if not quiet:
        stderr().print(plain(msg), highlight=False)


def warn(msg: str, quiet: bool = False) -> None:
    """A warning on stderr; ``msg`` is plain text (paths, labels), never markup."""
    if not quiet:
        stderr().print(Text.assemble(("warning: ", "bold yellow"), safe(msg)), highlight=False)


def progress(quiet: bool = False) -> Progress:
    """A Rich progress bar on stderr (disabled when quiet or not a terminal-friendly run)."""
    return Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
        console=stderr(), disable=quiet, transient=False,
    )


def fail(message: str, hint: str | None = None, code: int = EXIT_ERROR) -> None:
    err = stderr()
    err.print(Text.assemble(("error: ", "bold red"), safe(str(message))), highlight=False)
    if hint:
        err.print(Text.assemble(("hint: ", "dim"), safe(str(hint))), highlight=False)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn library errors into one-line messages and exit codes (tracebacks only in debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.DEBUG if debug_enabled() else logging.WARNING, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except FacesearchError as e:
            if debug_enabled():
                raise
            fail(e.message, e.hint)
        except ImportError as e:  # torch or matplotlib left out of a light install: name the extra
            extra = missing_extra(e, f"facesearch {fn.__name__.removesuffix('_cmd').replace('_', '-')}")
            if debug_enabled():
                raise
            fail(extra.message, extra.hint) if extra else _unexpected(e)
        except KeyboardInterrupt:  # 130 = 128 + SIGINT, as shells report a Ctrl-C
            fail("interrupted", "nothing was lost: the last completed state is kept; re-run to resume",
                 code=EXIT_INTERRUPTED)
        except Exception as e:
            if debug_enabled():
                raise
            if _disk_full(e):
                fail(f"the disk is full ({e})", "free some space and re-run: what was committed before is intact, "
                                                 "and the run resumes where it stopped")
            _unexpected(e)

    return wrapper


def _disk_full(e: BaseException) -> bool:
    """ENOSPC from the OS, or SQLite's own 'database or disk is full'."""
    return getattr(e, "errno", None) == errno.ENOSPC or "disk is full" in str(e)


def _unexpected(e: BaseException) -> None:
    # A bug: say so briefly, trace on request.
    fail(f"unexpected {type(e).__name__}: {e}", "re-run with FACESEARCH_DEBUG=1 for a traceback")
