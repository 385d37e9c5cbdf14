"""A real package: the wheel carries every module and the shipped weights, and the installed
package works from a folder that is not the checkout."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from facesearch.photos.synthetic import make_identity_folder

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy of the tracked tree, so nothing the tests or a developer left in the
    # checkout (build/, weights/dlib_port.*) can leak into the wheel.
    src = tmp_path_factory.mktemp("src") / "facesearch"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    if not files:
        pytest.skip("not a git checkout")
    for name in files.decode().split("\0"):
        if name and (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)]
    if (REPO / "requirements.lock").is_file():
        cmd[5:5] = ["--build-constraint", str(REPO / "requirements.lock")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "license" not in proc.stderr.lower(), proc.stderr  # no deprecated-licence warnings
    (whl,) = out.glob("facesearch-*.whl")
    return whl


@pytest.mark.parametrize("model", ["dlib_ft", "yunet", "sface"])
def test_wheel_holds_every_module_and_the_shipped_weights(wheel, model):
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {p.relative_to(REPO).as_posix() for p in (REPO / "facesearch").rglob("*.py")}
    assert source <= names, sorted(source - names)
    for f in (f"{model}.json", f"{model}.safetensors", "default.json", "README.md"):
        assert f"facesearch/weights/{f}" in names
    assert not any("dlib_port" in n for n in names)  # only what the product uses ships
    with zipfile.ZipFile(wheel) as z:
        meta = json.loads(z.read(f"facesearch/weights/{model}.json"))
        digest = hashlib.sha256(z.read(f"facesearch/weights/{model}.safetensors")).hexdigest()
        default = json.loads(z.read("facesearch/weights/default.json"))  # the fused model: its parts
    assert meta["sha256"] == digest
    parts = {c["weights"]: c["sha256"] for c in default["config"]["components"]}
    assert parts.get(model, digest) == digest


def test_installed_package_works_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)]
    assert subprocess.run(pip, capture_output=True, timeout=600).returncode == 0
    work = tmp_path / "elsewhere"
    photos = make_identity_folder(work / "photos", n_people=3, per_person=2, seed=7)
    probe = sorted((photos / "person_01").iterdir())[0]
    (work / "inbox").mkdir()
    (work / "inbox" / "copy.png").write_bytes(probe.read_bytes())
    # The dependencies come from this environment; facesearch itself only from the wheel.
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("FACESEARCH_HOME", None), env.pop("FACESEARCH_WEIGHTS", None)

    def fs(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "facesearch", *args, "--json"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        return json.loads(proc.stdout)

    where = subprocess.run([sys.executable, "-c", "import facesearch; print(facesearch.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True).stdout.strip()
    assert Path(where).is_relative_to(site)
    doctor = fs("doctor")
    weights = next(c for c in doctor["checks"] if c["name"] == "weights")
    assert weights["ok"] and "checksum ok" in weights["detail"]
    assert fs("index", "photos", "--label-from-folder")["faces"] == 6
    assert fs("index", "inbox")["faces"] == 1
    (face,) = fs("query", str(probe), "--top", "3")["faces"]
    assert face["identity"] == "person_01"
    exact = fs("dedupe", "--scope", "photos")["exact_duplicates"]
    assert sorted([str(work / "inbox" / "copy.png"), str(probe)]) in [sorted(e) for e in exact]
