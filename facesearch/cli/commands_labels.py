"""Naming photos: ``label`` and ``enroll`` (one face per photo: the person's), and how names were placed."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from facesearch.cli import output as out
from facesearch.cli.app import DETECTOR, INDEX, JSON, WEIGHTS, app
from facesearch.cli.output import handle_errors
from facesearch.core.paths import resolve_index

FACE = typer.Option(None, "--face", min=1, help="Which face the name is: N counts the photo's faces from the left, "
                                                "from 1. [default: the face that looks like the name's other faces]")


def unplaced_report(summary: dict, quiet: bool) -> None:
    """Photos whose name could not be placed on one face: said, with how to choose (never guessed)."""
    if summary["unplaced"]:
        rows = [(u["path"], u["name"], u["faces"], u["reason"]) for u in summary["unplaced"]]
        out.stdout().print(out.table("photos where the name could not be placed", ["path", "name", "faces", "why"],
                                     rows, paths=["path"]))
        out.info(f"{len(rows)} photos where the name could not be placed: only the person's face is named; "
                 "choose it with `facesearch label PHOTO NAME --face N` (N counts faces from the left)", quiet)
    if summary.get("repaired"):
        out.info(f"names re-placed in this index made before they were placed: "
                 f"{len(summary['repaired']['unnamed'])} faces lost a name that was their photo's", quiet)


@app.command("label")
@handle_errors
def label_cmd(path: Path, name: str, face: Optional[int] = FACE, index: Optional[str] = INDEX,
              json_out: bool = JSON) -> None:
    """Name the person in PATH (a photo, or a folder of photos of that person) NAME: one face per photo."""
    from facesearch.people.labels import label

    _names_report(label(resolve_index(index), str(path), name, face), json_out)


@app.command("enroll")
@handle_errors
def enroll_cmd(name: str, photos: List[Path], face: Optional[int] = FACE, index: Optional[str] = INDEX,
               weights: Optional[str] = WEIGHTS, detector: str = DETECTOR, json_out: bool = JSON) -> None:
    """Add PHOTOS of person NAME to the gallery (one face per photo: NAME's)."""
    from facesearch.people.labels import enroll

    _names_report(enroll(resolve_index(index), name, [str(p) for p in photos], face, weights=weights,
                         detector=detector), json_out)


def _names_report(data: dict, json_out: bool) -> None:
    """Where a name landed, photo by photo, and where it could not (exit 1 when it landed nowhere)."""
    if json_out:
        out.emit_json(data)
    else:
        for p in data["placed"]:
            out.info(f"{p['path']}: face {p['face']} from the left is {p['name']} ({p['reason']})")
        for u in data["unplaced"]:
            out.warn(f"{u['path']}: the name could not be placed ({u['reason']}); "
                     f"choose the face with --face N (1 = leftmost of {u['faces']})")
        out.info(f"{len(data['placed'])} photos named {data['label']}, {len(data['unplaced'])} photos where "
                 "the name could not be placed")
    if not data["placed"]:
        raise typer.Exit(1)
