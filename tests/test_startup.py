"""Start-up: commands that load the shipped model never import timm or torchvision."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from facesearch.photos.synthetic import make_identity_folder

# Index and query in one fresh interpreter, then report which of the slow imports happened.
SCRIPT = """
import json, sys
from facesearch.cli.main import app
for args in (["index", sys.argv[1], "--index", sys.argv[2], "--quiet"],
             ["query", sys.argv[3], "--index", sys.argv[2], "--json", "--quiet"]):
    try:
        app(args, standalone_mode=False)
    except SystemExit as e:
        assert not e.code, e.code
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "timm", "torchvision"})))
"""


@pytest.mark.slow
def test_index_and_query_load_the_model_without_timm(tmp_path):
    photos = make_identity_folder(tmp_path / "photos", n_people=2, per_person=2, seed=2)
    query = sorted(photos.rglob("*.png"))[0]
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(photos), str(tmp_path / "idx"), str(query)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "torch" in loaded  # the model really ran
    assert "timm" not in loaded and "torchvision" not in loaded, loaded


REINDEX = """
import json, sys
from facesearch.cli.main import app
try:
    app(["index", sys.argv[1], "--index", sys.argv[2], "--quiet"], standalone_mode=False)
except SystemExit as e:
    assert not e.code, e.code
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "timm", "torchvision"})))
"""


def test_reindex_of_an_unchanged_collection_never_imports_torch(tmp_path):
    """Nothing to embed: no torch (2 s of imports), so a re-index costs what stat and SQLite cost."""
    from typer.testing import CliRunner

    from facesearch.cli.main import app

    photos = make_identity_folder(tmp_path / "photos", n_people=2, per_person=2, seed=3)
    first = CliRunner().invoke(app, ["index", str(photos), "--index", str(tmp_path / "idx"), "--quiet"])
    assert first.exit_code == 0, first.output
    out = subprocess.run([sys.executable, "-c", REINDEX, str(photos), str(tmp_path / "idx")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_version_flag():
    from facesearch import __version__

    out = subprocess.run([sys.executable, "-m", "facesearch", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"facesearch {__version__}"
