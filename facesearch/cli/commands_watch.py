"""``facesearch watch``: keep an index current while photos come, change, move and go."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from facesearch.cli import output as out
from facesearch.cli.app import DETECTOR, DEVICE, INDEX, JSON, QUIET, WEIGHTS, app
from facesearch.cli.output import handle_errors
from facesearch.core.paths import resolve_index


@app.command("watch")
@handle_errors
def watch_cmd(
    paths: List[Path] = typer.Argument(..., help="Photo folders to watch (recursively)."),
    index: Optional[str] = INDEX, weights: Optional[str] = WEIGHTS, detector: str = DETECTOR, device: str = DEVICE,
    label_from_folder: bool = typer.Option(False, "--label-from-folder", help="Label faces with their folder's name."),
    xmp: bool = typer.Option(True, "--xmp/--no-xmp", help="Read names from XMP face regions and sidecars."),
    workers: Optional[int] = typer.Option(None, help="Detection worker processes for large batches (0: in-process)."),
    settle: float = typer.Option(1.0, "--settle", min=0.05, help="Seconds without changes before a batch is indexed."),
    batch: int = typer.Option(64, "--batch", min=1, help="Photos per indexing run."),
    grace: Optional[float] = typer.Option(None, "--grace", min=0.0,
                                          help="Seconds a deleted photo is held before it is forgotten, so a folder "
                                               "moved out and back is a no-op (default: 5 x --settle)."),
    catch_up: bool = typer.Option(True, "--catch-up/--no-catch-up",
                                  help="First index what changed while nothing watched."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per event on stdout (a line each)."),
    quiet: bool = QUIET,
) -> None:
    """Index new and changed photos as they appear; moves keep their faces, deletions are forgotten.

    Ctrl-C stops (exit 130); the writer lock is held only while a batch is written.
    """
    from facesearch.indexing.watch import WatchOptions, watch
    from facesearch.indexing.work import IndexOptions

    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        out.fail(f"not a folder: {', '.join(missing)}", "watch takes folders; index single photos with `facesearch index`",
                 code=out.EXIT_USAGE)
    opts = WatchOptions(IndexOptions(paths=[str(p) for p in paths], index=resolve_index(index), weights=weights,
                                     detector=detector, device=device, label_from_folder=label_from_folder, xmp=xmp,
                                     workers=workers), settle=settle, batch=batch, catch_up=catch_up,
                        grace=grace)
    status = None if (json_out or quiet) else out.stderr().status("starting: indexing what changed meanwhile")
    line = _json_line if json_out else _StatusLine(status, quiet)
    try:
        if status is not None:
            status.start()
        watch(opts, _placing(line, opts.index.index) if label_from_folder else line)
    except KeyboardInterrupt:  # the batch being written is committed or rolled back whole
        if status is not None:
            status.stop()
        out.info("stopped", quiet or json_out)
        raise typer.Exit(out.EXIT_INTERRUPTED) from None
    finally:
        if status is not None:
            status.stop()


def _placing(line, index: Path):
    """``line`` with each indexed batch's folder names placed on one face per photo first (reported
    as ``unplaced`` on the event: photos where the name could not be placed)."""
    from facesearch.people.labels import place_last_run

    def on_event(e: dict) -> None:
        if e["event"] == "indexed" and e["files"]:
            e = {**e, "unplaced": place_last_run(index)["unplaced"]}
        line(e)
    return on_event


def _json_line(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class _StatusLine:
    """One Rich status line on stderr with the totals and the last event; errors as warnings."""

    def __init__(self, status, quiet: bool):
        self.status, self.quiet = status, quiet
        self.totals = {"indexed": 0, "moved": 0, "pruned": 0}

    def __call__(self, e: dict) -> None:
        kind = e["event"]
        if kind == "error":  # said as a warning, and kept on the status line until the next event
            out.warn(e["error"], self.quiet)
            last = f"error: {e['error']}"
        elif kind == "indexed":
            self.totals["indexed"] += e["files"]
            last = f"indexed {e['files']} photos ({e['faces']} faces) in {e['seconds']} s"
        elif kind == "moved":
            self.totals["moved"] += 1
            last = f"moved {Path(e['from']).name} -> {Path(e['to']).name}"
        elif kind == "pruned":
            self.totals["pruned"] += e["files"]
            last = f"forgot {e['files']} deleted photos"
        else:
            last = f"watching {', '.join(e['paths'])}"
        if self.status is not None:
            t = self.totals
            self.status.update(out.plain(f"{t['indexed']} indexed, {t['moved']} moved, {t['pruned']} pruned · {last} "
                                        "(Ctrl-C stops)"))
