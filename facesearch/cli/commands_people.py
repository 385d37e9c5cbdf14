"""``facesearch people``: the collection's faces grouped into persons; name, merge, split, correct."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from facesearch.cli import output as out
from facesearch.cli.app import INDEX, JSON, QUIET, app
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
