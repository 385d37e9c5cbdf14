"""``facesearch``: the console script's entry point (``facesearch.cli.main:app``).

The app and its shared options live in :mod:`facesearch.cli.app`; importing the command modules
registers their commands on it.
"""

from facesearch.cli import commands_index, commands_labels, commands_people, commands_train, commands_watch  # noqa: F401  (register commands)
from facesearch.cli.app import app

__all__ = ["app"]
