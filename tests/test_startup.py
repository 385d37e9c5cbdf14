"""Start-up: on a CPU the commands that detect and embed never import torch, timm or torchvision.

The shipped networks run on the inference runtime (facesearch.core.runtime) from their exported
ONNX files; torch stays the training framework, the export source and the CUDA path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from facesearch.photos.synthetic import make_identity_folder

TORCH = {"torch", "timm", "torchvision"}
RUNTIMES = {"onnxruntime", "openvino"}

# index, query, dedupe and people in one fresh interpreter, then a served query (the service's app
# on the same index), then report which of the slow imports happened.
SCRIPT = """
import json, sys
from facesearch.cli.main import app
for args in (["index", sys.argv[1], "--index", sys.argv[2], "--quiet"],
             ["query", sys.argv[3], "--index", sys.argv[2], "--json", "--quiet"],
             ["dedupe", "--index", sys.argv[2], "--json", "--quiet"],
             ["people", "--index", sys.argv[2], "--json", "--quiet"]):
    try:
        app(args, standalone_mode=False)
    except SystemExit as e:
        assert not e.code, (args, e.code)
from fastapi.testclient import TestClient
from facesearch.service.app import create_app
from facesearch.service.state import ServeOptions
client = TestClient(create_app(ServeOptions(index=sys.argv[2], device="cpu")), base_url="http://127.0.0.1:8750")
with open(sys.argv[3], "rb") as f:
    r = client.post("/api/query", files={"image": ("q.png", f.read(), "image/png")})
assert r.status_code == 200, r.text
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "timm", "torchvision", "onnxruntime",
                                                                  "openvino"})))
"""


@pytest.mark.slow
def test_cpu_commands_and_the_service_never_import_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    photos = make_identity_folder(tmp_path / "photos", n_people=2, per_person=2, seed=2)
    query = sorted(photos.rglob("*.png"))[0]
    env = {k: v for k, v in os.environ.items() if k not in ("FACESEARCH_RUNTIME", "CUDA_VISIBLE_DEVICES")}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(photos), str(tmp_path / "idx"), str(query)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert loaded & RUNTIMES  # the networks really ran, on the runtime
    assert not loaded & TORCH, loaded


def test_a_detection_worker_never_imports_torch(tmp_path):
    """What every detection worker runs (YuNet on the runtime, dlib's landmarks), in a fresh process."""
    pytest.importorskip("onnxruntime")
    photo = sorted(make_identity_folder(tmp_path / "photos", n_people=1, per_person=1, seed=4).rglob("*.png"))[0]
    script = ("import json, sys\nfrom facesearch.faces.chips import extract_faces\n"
              "from facesearch.faces.detect import create_detector\nfrom facesearch.photos.load import load_array\n"
              "crops = extract_faces(load_array(sys.argv[1]), create_detector('auto'), 'dlib5_150_p25+arcface_112')\n"
              "assert crops\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules} "
              "& {'torch', 'timm', 'torchvision', 'onnxruntime'})))")
    out = subprocess.run([sys.executable, "-c", script, str(photo)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["onnxruntime"]


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


# A light install (no train extra): torch, timm and torchvision cannot be imported at all.
WITHOUT_TORCH = """
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTorch())
from facesearch.cli.main import app
codes = {}
for args in (["index", sys.argv[1], "--index", sys.argv[2], "--quiet"],
             ["query", sys.argv[3], "--index", sys.argv[2], "--json", "--quiet"],
             ["dedupe", "--index", sys.argv[2], "--json", "--quiet"],
             ["people", "--index", sys.argv[2], "--json", "--quiet"],
             ["doctor", "--index", sys.argv[2], "--json"],
             ["train", sys.argv[1], "--out", sys.argv[4], "--epochs", "1", "--quiet"]):
    try:  # standalone_mode=False: click returns an Exit's code
        codes[args[0]] = app(args, standalone_mode=False) or 0
    except SystemExit as e:
        codes[args[0]] = e.code or 0
print(json.dumps(codes))
"""


def test_a_light_install_without_torch_indexes_queries_and_names_the_extra_for_train(tmp_path):
    """index, query, dedupe, people and doctor succeed where torch cannot be imported; train exits 1
    naming the extra."""
    pytest.importorskip("onnxruntime")
    photos = make_identity_folder(tmp_path / "photos", n_people=2, per_person=2, seed=5)
    query = sorted(photos.rglob("*.png"))[0]
    env = {k: v for k, v in os.environ.items() if k not in ("FACESEARCH_RUNTIME", "FACESEARCH_DEBUG")}
    out = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(photos), str(tmp_path / "idx"), str(query),
                          str(tmp_path / "model")], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    codes = json.loads(out.stdout.strip().splitlines()[-1])
    assert codes == {"index": 0, "query": 0, "dedupe": 0, "people": 0, "doctor": 0, "train": 1}
    assert "error: facesearch train needs torch" in out.stderr
    assert "hint: pip install 'facesearch[train]'" in out.stderr
