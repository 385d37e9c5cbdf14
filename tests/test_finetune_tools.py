"""tools/cache_chips.py -> tools/finetune_default.py on synthetic faces: the recipe that makes the default."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from facesearch.models.weights import load_weights, read_meta, resolve_weights
from facesearch.photos.synthetic import make_identity_folder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import cache_chips  # noqa: E402
import finetune_default  # noqa: E402


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    """A chip cache with a labelled train set, an unlabelled one and a dev set."""
    root = tmp_path_factory.mktemp("ft")
    make_identity_folder(root / "data" / "train" / "people", n_people=6, per_person=4, seed=1)
    unlabelled = make_identity_folder(root / "tmp", n_people=1, per_person=5, seed=2)
    loose = root / "data" / "train" / "loose"
    loose.mkdir()
    for p in sorted(unlabelled.rglob("*.png")):
        p.rename(loose / p.name)  # photos straight in the set folder: no identities
    (loose / "broken.png").write_bytes(b"not an image")
    make_identity_folder(root / "data" / "dev" / "people", n_people=4, per_person=3, seed=3)
    for split in ("train", "dev"):
        assert cache_chips.main([str(root / "data" / split), "--out", str(root / "chips" / split),
                                 "--detector", "none", "--workers", "1"]) == 0
    return root / "chips"


def test_cache_chips_labels_and_skips_bad_files(chips, capsys):
    people = np.load(chips / "train" / "people.npz")
    assert people["chips"].shape == (24, 150, 150, 3) and people["chips"].dtype == np.uint8
    assert sorted(np.unique(people["labels"])) == list(range(6))
    loose = np.load(chips / "train" / "loose.npz")
    assert len(loose["labels"]) == 5 and (loose["labels"] == -1).all()  # the broken file is skipped
    assert not loose["detected"].any()  # --detector none: the whole image is the face
    # A second run finds the caches and leaves them alone.
    before = (chips / "train" / "people.npz").stat().st_mtime_ns
    cache_chips.main([str(chips.parent / "data" / "train"), "--out", str(chips / "train"), "--detector", "none"])
    assert (chips / "train" / "people.npz").stat().st_mtime_ns == before
    assert "cached" in capsys.readouterr().err


def test_finetune_writes_loadable_weights_with_recipe(chips, tmp_path):
    out = tmp_path / "ft"
    args = ["--chips", str(chips), "--out", str(out), "--sets", "people", "--unlabelled-sets", "loose",
            "--dev-sets", "people", "--cut", "13", "--steps", "3", "--eval-every", "3", "--p", "3", "--k", "2",
            "--unlabelled", "2", "--relational", "raw"]
    assert finetune_default.main(args) == 0
    model = load_weights(out)
    init = read_meta(resolve_weights("dlib_ft"))
    assert model.model_id != init["model_id"]  # trained tensors, new id
    recipe = model.config.recipe["finetune"]
    assert recipe["init"] == init["model_id"] and recipe["cut"] == 13
    assert recipe["options"]["relational"] == "raw" and recipe["unlabelled_sets"] == ["loose"]
    history = json.loads(Path(str(out) + ".history.json").read_text())["history"]
    assert [h["step"] for h in history] == [3] and 0.0 <= history[0]["people/auc"] <= 1.0
