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
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.measure import Measurement
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
          compact: bool = False, paths: Sequence[str] = ()) -> Table:
    """A Rich table; title and cells are plain text (paths and labels are never read as markup).
    ``compact``: no side borders, so that more of an 80-column terminal is left to the cells.
    ``paths``: the columns that hold one path each: one line per cell, shortened in the middle."""
    t = Table(title=plain(title) if title is not None else None, show_lines=False,
              box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD, pad_edge=not compact)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[_render(v, c in paths) for c, v in zip(columns, r)])
    return t


def _render(v: Any, path: bool):
    if isinstance(v, Fitted):  # built by the command: its text is made safe already
        return v
    return Fitted(_cell(v), whole=True) if path else plain(_cell(v))


def middle_ellipsis(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, cut in the middle (``/photos/…/IMG_0042.jpg``): a path keeps
    its start and its file name's end, where a cut at the end would lose the extension."""
    if cell_len(text) <= width:
        return text
    if width < 2:
        return "…"[:width]
    tail = set_cell_size(text[::-1], (width - 1) - (width - 1) // 2)[::-1]
    return set_cell_size(text, (width - 1) // 2) + "…" + tail


class Fitted:
    """Plain text that never breaks a path, for a table cell or a line of its own: laid out at
    render time, at the width it gets, from pieces that are never split (a path, spaces and all);
    a piece wider than the width is cut in its middle (:func:`middle_ellipsis`). ``text``: a string
    (``whole``: one piece; else its words, line by line) or the pieces themselves."""

    def __init__(self, text: str | Sequence[str], whole: bool = False, min_width: int = 16):
        if isinstance(text, str):
            paragraphs = [[text]] if whole else [line.split(" ") for line in text.split("\n")]
        else:
            paragraphs = [list(text)]
        self.paragraphs = [[safe(p) for p in para] for para in paragraphs]
        self.min_width = min_width

    def __rich_measure__(self, console: Console, options) -> Measurement:
        widest = max((cell_len(p) for para in self.paragraphs for p in para), default=0)
        longest = max((cell_len(" ".join(para)) for para in self.paragraphs), default=0)
        return Measurement(min(self.min_width, widest), longest)

    def __rich_console__(self, console: Console, options):
        lines = [line for para in self.paragraphs for line in _fill(para, options.max_width)]
        yield Text("\n".join(lines), no_wrap=True, overflow="ellipsis")


def _fill(pieces: list[str], width: int) -> list[str]:
    """``pieces`` in lines of at most ``width`` cells, a space between two on one line."""
    lines, line = [], ""
    for piece in (middle_ellipsis(p, width) for p in pieces):
        if line and cell_len(line) + 1 + cell_len(piece) > width:
            lines.append(line)
            line = piece
        else:
            line = f"{line} {piece}" if line else piece
    return lines + [line]


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
