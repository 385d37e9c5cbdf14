"""``facesearch people``: the collection's faces grouped into persons; name, merge, split, correct."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from facesearch.cli import output as out
from facesearch.cli.app import INDEX, JSON, QUIET, app, one_of
from facesearch.cli.output import handle_errors
from facesearch.core.paths import resolve_index

people_app = typer.Typer(help="People: faces grouped into persons, named once, corrections that stick.",
                         no_args_is_help=False)
app.add_typer(people_app, name="people")


@people_app.callback(invoke_without_command=True)
@handle_errors
def people_cmd(
    ctx: typer.Context,
    index: Optional[str] = INDEX,
    recluster: bool = typer.Option(False, "--recluster", help="Cluster again even if the index has not changed."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a report: each person as a grid of faces."),
    json_out: bool = JSON, quiet: bool = QUIET,
) -> None:
    """List the people of an index (clustering its faces first when it changed)."""
    ctx.obj = {"index": index}
    if ctx.invoked_subcommand is not None:
        return
    from facesearch.people.persons import PeopleOptions, people

    with out.progress(quiet or json_out) as bar:
        bar.add_task("clustering people", total=None, status="")
        result = people(PeopleOptions(index=resolve_index(index), recluster=recluster))
    for w in result["warnings"]:
        out.warn(w, quiet)
    if html:
        from facesearch.report import render_people_html

        render_people_html(result, html)
        out.info(f"report: {html}", quiet)
    if json_out:
        return out.emit_json(result)
    rows = [(p["id"], p["name"] or "—", len(p["faces"]), ", ".join(Path(f["path"]).name for f in p["faces"][:3]))
            for p in result["people"]]
    out.stdout().print(out.table("people", ["id", "name", "faces", "examples"], rows))
    out.info(f"{len(result['people'])} people, {len(result['unassigned'])} unassigned faces"
             + (f" (clustered: {result['tau_source']}, τ {result['tau']:.3f})" if result["clustered"] else ""), quiet)


def _index(ctx: typer.Context, index: Optional[str]) -> Path:
    """The subcommand's --index, else the one given to ``people`` (or its default)."""
    return resolve_index(index or (ctx.obj or {}).get("index"))


def _done(result: dict, json_out: bool, message: str, quiet: bool) -> None:
    if json_out:
        out.emit_json(result)
    else:
        out.info(message, quiet)


@people_app.command("name")
@handle_errors
def name_cmd(ctx: typer.Context, person: int = typer.Argument(..., help="Person id (see `facesearch people`)."),
             name: str = typer.Argument(..., help="The person's name."),
             index: Optional[str] = INDEX, json_out: bool = JSON, quiet: bool = QUIET) -> None:
    """Name a person: its faces are labelled with the name, so `query` answers with it."""
    from facesearch.people.persons import name_person

    r = name_person(_index(ctx, index), person, name)
    _done(r, json_out, f"person {r['person']} is now {r['name']!r} ({r['faces']} faces)", quiet)


@people_app.command("merge")
@handle_errors
def merge_cmd(ctx: typer.Context, keep: int = typer.Argument(..., help="Person id to keep."),
              other: int = typer.Argument(..., help="Person id merged into it."),
              index: Optional[str] = INDEX, json_out: bool = JSON, quiet: bool = QUIET) -> None:
    """Merge two people who are one (the second joins the first)."""
    from facesearch.people.persons import merge_people

    r = merge_people(_index(ctx, index), keep, other)
    _done(r, json_out, f"person {other} merged into {keep} ({r['faces']} faces)", quiet)


@people_app.command("split")
@handle_errors
def split_cmd(ctx: typer.Context, person: int = typer.Argument(..., help="Person id."),
              faces: List[int] = typer.Argument(..., help="Face ids that are someone else."),
              index: Optional[str] = INDEX, json_out: bool = JSON, quiet: bool = QUIET) -> None:
    """Split faces off a person into a new person; the two are kept apart from now on."""
    from facesearch.people.persons import split_person

    r = split_person(_index(ctx, index), person, faces)
    _done(r, json_out, f"{r['moved']} faces moved from person {person} to new person {r['new_person']}", quiet)


@people_app.command("remove-face")
@handle_errors
def remove_face_cmd(ctx: typer.Context, face: int = typer.Argument(..., help="Face id (see `people --json`)."),
                    index: Optional[str] = INDEX, json_out: bool = JSON, quiet: bool = QUIET) -> None:
    """"Not this person": take a face out of its person for good."""
    from facesearch.people.persons import remove_face

    r = remove_face(_index(ctx, index), face)
    _done(r, json_out, f"face {face} is no longer in person {r['removed_from']}, and will not rejoin it", quiet)


@people_app.command("assign")
@handle_errors
def assign_cmd(ctx: typer.Context, person: int = typer.Argument(..., help="Person id the faces belong to."),
               faces: List[int] = typer.Argument(..., help="Face ids (unassigned, or someone else's)."),
               index: Optional[str] = INDEX, json_out: bool = JSON, quiet: bool = QUIET) -> None:
    """Sort faces into a person by hand; they stay there (and take the person's name)."""
    from facesearch.people.persons import assign_faces

    r = assign_faces(_index(ctx, index), person, faces)
    _done(r, json_out, f"{r['assigned']} faces are now person {person}" + (f" ({r['name']!r})" if r["name"] else ""),
          quiet)


@people_app.command("write-xmp")
@handle_errors
def write_xmp_cmd(
    ctx: typer.Context,
    person: Optional[List[int]] = typer.Option(None, "--person", help="Only this person (repeatable). "
                                                                      "[default: every named person]"),
    embed: bool = typer.Option(False, "--embed/--sidecar",
                               help="Write into the photos themselves, or (default) into .xmp sidecars beside them."),
    sidecar_name: str = typer.Option("full", "--sidecar-name", callback=one_of(("full", "stem")),
                                     help="full: photo.jpg.xmp (digiKam, darktable) | stem: photo.xmp (Lightroom)."),
    index: Optional[str] = INDEX, json_out: bool = JSON, quiet: bool = QUIET,
) -> None:
    """Write named people as XMP face regions (MWG + Microsoft) other photo tools read; `facesearch undo` reverts."""
    from facesearch.people.xmp_export import XmpExportOptions, write_xmp

    r = write_xmp(XmpExportOptions(index=_index(ctx, index), persons=list(person or []), embed=embed,
                                   sidecar_name=sidecar_name))
    for s in r["skipped"]:
        out.warn(f"skipped {s['path']}: {s['error']}", quiet)
    for c in r["renamed"]:
        out.warn(f"{c['path']}: the region named {c['from']!r} is now {c['to']!r}", quiet)
    message = (f"{r['faces']} faces of {r['people']} people: {r['files_written']} files written "
               f"({r['files_created']} new), {r['unchanged']} already up to date")
    if r["collisions"]:
        message += f", {len(r['collisions'])} sidecars not written: each would be shared by two photos"
    if r["journal"]:
        message += f"; undo: facesearch undo {r['journal']}"
    _done(r, json_out, message, quiet)
