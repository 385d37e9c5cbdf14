"""``facesearch`` — every command is a thin wrapper over a library function.

Data goes to stdout (Rich tables, or JSON with ``--json``); progress and errors
go to stderr. Exit 0 ok, 1 user/data error, 2 usage error.
"""

from __future__ import annotations

import typer

from facesearch import __version__

app = typer.Typer(
    name="facesearch", help="Learn, index, find and deduplicate faces in photo collections.",
    no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
)

JSON = typer.Option(False, "--json", help="Machine-readable JSON on stdout.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress or messages on stderr.")
INDEX = typer.Option(None, "--index", "-i", help="Index name (under indexes/) or folder. [default: default]")
WEIGHTS = typer.Option(None, "--weights", "-w", help="Weights name or .json path. [default: shipped model]")
DETECTOR = typer.Option("auto", "--detector", help="auto | dlib-hog | dlib-cnn | opencv-haar | none (inputs are face crops).")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | mps.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facesearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(ctx: typer.Context,
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version.")) -> None:
    """facesearch: Siamese face embeddings + FAISS search."""
    from facesearch.cli.output import fail
    from facesearch.errors import FacesearchError
    from facesearch.settings import load_settings

    try:
        defaults = load_settings(list(ctx.command.commands))  # type: ignore[attr-defined]
    except FacesearchError as e:
        fail(e.message, e.hint)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


from facesearch.cli import commands_index, commands_train  # noqa: E402,F401  (register commands)
