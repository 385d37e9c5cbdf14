"""The ``facesearch`` Typer app, its root callback and the options the command modules share.

Every command is a thin wrapper over a library function.

Data goes to stdout (Rich tables, or JSON with ``--json``); progress and errors
go to stderr. Exit 0 ok, 1 user/data error, 2 usage error.
"""

from __future__ import annotations

import re

import typer

from facesearch import __version__

app = typer.Typer(
    name="facesearch", help="Learn, index, find and deduplicate faces in photo collections.",
    no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
    # Click's plain help, not Typer's Rich panels: Rich shrinks its option table to the terminal and cuts
    # option names (`--label-from-fol…` at 80 columns, issue 39); Click puts a long name on its own line.
    rich_markup_mode=None,
)

# Option checks run while the command line is parsed (flags and facesearch.toml defaults alike), so a
# bad value is a usage error -- exit 2 with Typer's "Invalid value for '--x': ..." message, no traceback
# -- before any photo is read, worker started or model loaded. Raise typer.BadParameter, not click's:
# Typer vendors its own Click, so a click.BadParameter would escape as a traceback.
# The value lists are copies, not imports, to keep start-up light (facesearch.faces.detect pulls in cv2,
# facesearch.store.vectors.ops faiss); tests/test_cli.py checks that they match the library's.

# Mirrors facesearch.faces.detect.DETECTORS.
DETECTORS = ("auto", "yunet", "yunet-cnn", "dlib-auto", "dlib-hog", "dlib-cnn", "opencv-haar", "none")
# "auto" plus facesearch.store.vectors.ops.INDEX_TYPES.
INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
# What facesearch.models.embed.select_device accepts ("cuda:N" picks a GPU).
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def one_of(choices: tuple[str, ...]):
    """An option callback accepting only ``choices`` (None passes: the option was not given)."""

    def check(value: str | None) -> str | None:
        if value is None or value in choices:
            return value
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}.")

    return check


# Mirror facesearch.faces.detect.POLICIES, dedupe's scopes and KEEP_RULES, losses.LOSSES.
POLICIES = ("all", "largest")
SCOPES = ("faces", "photos")
KEEP_RULES = ("largest", "sharpest", "oldest")
LOSSES = ("contrastive", "triplet", "bce")
check_policy, check_scope, check_keep, check_loss = (one_of(c) for c in (POLICIES, SCOPES, KEEP_RULES, LOSSES))
check_detector, check_index_type = one_of(DETECTORS), one_of(INDEX_TYPES)
# Mirrors facesearch.indexing.run.ENGINES.
ENGINES = ("local", "ray")
check_engine = one_of(ENGINES)


def check_backend(value: str | None) -> str | None:
    """``--backend``: faiss or a milvus:// URI (facesearch.store.vectors.base)."""
    from facesearch.core.errors import FacesearchError
    from facesearch.store.vectors.base import check_backend as check

    try:
        return None if value is None else check(value)
    except FacesearchError as e:
        raise typer.BadParameter(f"{e.message} ({e.hint}).") from None


def check_device(value: str | None) -> str | None:
    if value is None or _DEVICE.fullmatch(value):
        return value
    raise typer.BadParameter(f"{value!r} is not one of {', '.join(DEVICES)}.")


def check_tau(value: float | None) -> float | None:
    from facesearch.eval.tau import check_tau as valid_tau  # the one rule (numpy only)

    try:
        return None if value is None else valid_tau(value)
    except ValueError as e:
        raise typer.BadParameter(f"{e}.") from None


JSON = typer.Option(False, "--json", help="Machine-readable JSON on stdout.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress or messages on stderr.")
INDEX = typer.Option(None, "--index", "-i", help="Index name (under indexes/) or folder. [default: default]")
WEIGHTS = typer.Option(None, "--weights", "-w", help="Weights name or .json path. [default: shipped model]")
DETECTOR = typer.Option("auto", "--detector", callback=check_detector,
                        help=f"{' | '.join(DETECTORS)} (none: inputs are face crops).")
DEVICE = typer.Option("auto", "--device", callback=check_device, help=f"{' | '.join(DEVICES)}.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facesearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(ctx: typer.Context,
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version.")) -> None:
    """facesearch: Siamese face embeddings + FAISS search."""
    from facesearch.cli.output import fail
    from facesearch.core.errors import FacesearchError
    from facesearch.core.settings import load_settings

    try:
        defaults = load_settings(list(ctx.command.commands))  # type: ignore[attr-defined]
    except FacesearchError as e:
        fail(e.message, e.hint)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}

