"""Optional ``facesearch.toml``: defaults for CLI options. Flags override env vars override the file.

Looked up in ``./facesearch.toml``, then ``$FACESEARCH_HOME/facesearch.toml``. Top-level keys apply to
every command that has that option; a ``[command]`` table applies to one command::

    index = "family"          # like --index family everywhere
    detector = "dlib-hog"

    [query]
    top = 10
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from facesearch.core.errors import FacesearchError
from facesearch.core.paths import home

# Env vars that outrank the file for the option they name.
ENV_OPTIONS = {"index": "FACESEARCH_INDEX", "weights": "FACESEARCH_WEIGHTS"}


def settings_file() -> Path | None:
    """The settings file in use: ``./facesearch.toml``, else ``$FACESEARCH_HOME/facesearch.toml``, else None."""
    user_home = home()
    for cand in [Path.cwd() / "facesearch.toml", user_home / "facesearch.toml" if user_home else None]:
        if cand is not None and cand.is_file():
            return cand
    return None


def load_settings(commands: list[str]) -> dict[str, dict]:
    """Click ``default_map``: per-command option defaults from the settings file (empty if none)."""
    path = settings_file()
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FacesearchError(f"cannot read {path}: {e}", hint="fix or remove the settings file") from e
    shared = {k: v for k, v in data.items() if not isinstance(v, dict) and not os.environ.get(ENV_OPTIONS.get(k, ""))}
    # "index" is both an option and a command: only tables count as per-command settings
    return {cmd: {**shared, **(data[cmd] if isinstance(data.get(cmd), dict) else {})} for cmd in commands}
