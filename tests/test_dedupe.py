"""Dedupe you can trust: groups that do not chain, keepers that stay, moves that can be undone."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from facesearch.search.dedupe import DedupeOptions, find_duplicates, keeper_key, keeper_reason, plan_actions
from facesearch.store.vectors.components import connected_components, keeper_groups
from facesearch.store.face_index import FaceIndex, FaceRecord

DIM = 16
CALIBRATION = {"embedding_dim": DIM, "tau": 0.43, "tau_dedupe": 0.16,
               "calibration": {"far_curve": [[0.1, 0.48], [0.01, 0.41], [0.001, 0.37]]}}


# ------------------------------------------------------------------ complete linkage


@pytest.mark.parametrize("seed", range(5))
def test_keeper_groups_are_cliques_seeded_at_the_best_rank(seed):
    rng = np.random.default_rng(seed)
    n = 40
    pairs = sorted({(a, b) for a, b in rng.integers(0, n, (90, 2)).tolist() if a < b})
    i, j = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    rank = {k: int(r) for k, r in zip(range(n), rng.permutation(n))}
    groups = keeper_groups(i, j, rank)
    edges = set(pairs)
    seen = set()
    for g in groups:
        assert len(g) >= 2 and not (set(g) & seen)
        seen |= set(g)
        assert all((min(a, b), max(a, b)) in edges for a, b in itertools.combinations(g, 2))  # no chain
        assert g[0] == min(g, key=lambda x: rank[x])  # the keeper is the best-ranked member
    comps = connected_components(np.r_[i, j], i, j)
    for g in groups:  # never across components
        assert sum(set(g) <= set(c) for c in comps) == 1


# ------------------------------------------------------------------ the product path


def index_with(tmp_path: Path, vectors: dict[str, np.ndarray]) -> Path:
    """An index whose files hold one face each, with the given embeddings (unit rows)."""
    folder = tmp_path / "idx"
    with FaceIndex.create(folder, model_id="m", model_config=CALIBRATION, dim=DIM) as store:
        for name, v in vectors.items():
            path = tmp_path / "photos" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(name.encode() * (10 + len(name)))
            st = path.stat()
            store.upsert_file(str(path), st.st_size, st.st_mtime_ns, name, "ok", None,
                              [FaceRecord((0.0, 0.0, 50.0, 50.0), 0.9, None)], v[None, :].astype(np.float32))
    return folder


def around(centre: np.ndarray, n: int, radius: float, rng) -> list[np.ndarray]:
    """``n`` unit vectors at distance ``radius`` from the unit vector ``centre``."""
    out = []
    for _ in range(n):
        v = rng.standard_normal(DIM)
        v -= (v @ centre) * centre  # orthogonal direction
        v /= np.linalg.norm(v)
        theta = 2 * np.arcsin(radius / 2)  # chord length -> angle
        out.append(np.cos(theta) * centre + np.sin(theta) * v)
    return out


def test_look_alikes_never_chain_into_one_group(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(DIM)
    a /= np.linalg.norm(a)
    b = around(a, 1, 0.7, rng)[0]  # two look-alike people 0.7 apart
    mid = (a + b) / np.linalg.norm(a + b)  # photos halfway: 0.35 from both
    vecs = {**{f"a_{k}.jpg": v for k, v in enumerate(around(a, 4, 0.05, rng))},
            **{f"b_{k}.jpg": v for k, v in enumerate(around(b, 4, 0.05, rng))},
            **{f"m_{k}.jpg": v for k, v in enumerate(around(mid, 2, 0.02, rng))}}
    idx = index_with(tmp_path, vecs)
    # Even at the verification τ (far looser than the dedupe τ, so the CLI warns) nothing chains.
    tau = CALIBRATION["tau"]
    report = find_duplicates(DedupeOptions(index=idx, tau=tau, scope="faces"))
    assert "looser than the model's near-duplicate τ 0.16" in report["warnings"][0]
    assert find_duplicates(DedupeOptions(index=idx, tau=0.16, scope="faces"))["warnings"] == []
    with FaceIndex.open(idx, readonly=True) as store:
        i, j, _ = store.range_pairs(tau)
        by_id = {r.face_id: Path(r.path).name[0] for r in store.faces(sorted(set(i) | set(j)))}
    chained = [{by_id[k] for k in c} for c in connected_components(np.r_[i, j], i, j)]
    assert {"a", "b"} <= set.union(*chained) and any({"a", "b"} <= c for c in chained)  # components would chain
    for g in report["groups"]:
        names = {Path(m["path"]).name[0] for m in g["members"]}
        assert not {"a", "b"} <= names, [m["path"] for m in g["members"]]
        assert g["max_distance"] <= tau
    loose = find_duplicates(DedupeOptions(index=idx, tau=1.0, scope="faces"))
    assert "more than 10%" in loose["warnings"][0]  # beyond the loosest FAR the calibration measured


def test_keeper_is_the_original():
    base = {"box": [0, 0, 100, 100], "size": 5000, "mtime_ns": 10}
    orig, copy = {**base, "path": "/p/IMG_1.jpg"}, {**base, "path": "/p/IMG_1 copy.jpg"}
    small, newer = {**base, "path": "/p/a.jpg", "box": [0, 0, 50, 50]}, {**base, "path": "/p/b.jpg", "mtime_ns": 99}
    ranked = sorted([copy, small, newer, orig], key=lambda m: keeper_key(m, "largest"))
    assert ranked[0] is orig and ranked[-1] is small
    assert keeper_reason(orig, copy, "largest") == "name without 'copy'"
    assert keeper_reason(orig, small, "largest") == "larger face"
    assert keeper_reason(orig, newer, "largest") == "older file"
    assert sorted([orig, newer], key=lambda m: keeper_key(m, "oldest"))[0] is orig


# ------------------------------------------------------------------ acting on the report


def index_faces(tmp_path: Path, photos: dict[str, list[tuple[np.ndarray, float]]]) -> Path:
    """An index of photos, each with faces given as (embedding, box side in px)."""
    folder = tmp_path / "idx"
    with FaceIndex.create(folder, model_id="m", model_config=CALIBRATION, dim=DIM) as store:
        for name, faces in photos.items():
            path = tmp_path / "photos" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(100))  # same size: the face and the name decide
            st = path.stat()
            recs = [FaceRecord((10.0 * k, 0.0, 10.0 * k + side, side), 0.9, None) for k, (_, side) in enumerate(faces)]
            store.upsert_file(str(path), st.st_size, st.st_mtime_ns, name, "ok", None, recs,
                              np.stack([v for v, _ in faces]).astype(np.float32))
    return folder


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_keeper_anywhere_is_never_moved(tmp_path):
    rng = np.random.default_rng(1)
    x, y = (around(v / np.linalg.norm(v), 1, 0.0, rng)[0] for v in rng.standard_normal((2, DIM)))
    near = lambda v: around(v, 1, 0.05, rng)[0]  # noqa: E731
    # The collage keeps the X group (its X face is the largest) but is a duplicate in the Y group.
    idx = index_faces(tmp_path, {"collage.jpg": [(x, 90.0), (y, 40.0)], "x_portrait.jpg": [(near(x), 60.0)],
                                 "y_portrait.jpg": [(near(y), 80.0)]})
    report = find_duplicates(DedupeOptions(index=idx, scope="faces"))
    keepers = {Path(g["keeper"]).name for g in report["groups"]}
    assert keepers == {"collage.jpg", "y_portrait.jpg"}
    assert [Path(a["src"]).name for a in plan_actions(report, str(tmp_path / "dups"))] == ["x_portrait.jpg"]


def test_moves_mirror_folders_leave_the_index_and_undo_restores_the_tree(tmp_path):
    from typer.testing import CliRunner

    from facesearch.cli.main import app
    from facesearch.indexing.maintenance import info, verify

    rng = np.random.default_rng(2)
    v = around(rng.standard_normal(DIM) / 4, 1, 0.0, rng)[0]
    v /= np.linalg.norm(v)
    idx = index_faces(tmp_path, {"2019/beach.jpg": [(v, 90.0)], "backup/2019/beach copy.jpg": [(around(v, 1, 0.03, rng)[0], 90.0)],
                                 "backup/other.jpg": [(around(v, 1, 1.2, rng)[0], 90.0)]})
    before = tree(tmp_path / "photos")
    runner = CliRunner()
    r = runner.invoke(app, ["dedupe", "--index", str(idx), "--move-to", str(tmp_path / "dups"), "--yes", "--json"])
    assert r.exit_code == 0, r.output
    applied = json.loads(r.stdout)["applied"]
    assert applied["moved"] == 1 and Path(applied["journal"]).parent == idx / "journal"
    assert (tmp_path / "dups" / "backup" / "2019" / "beach copy.jpg").read_bytes() == before["backup/2019/beach copy.jpg"]
    assert (tmp_path / "photos" / "2019" / "beach.jpg").exists()  # the keeper stays
    assert verify(idx)["ok"] and info(idx)["files"] == 2  # the moved file left the index
    r = runner.invoke(app, ["undo", "--index", str(idx)])
    assert r.exit_code == 0, r.output
    assert tree(tmp_path / "photos") == before and not any(p.is_file() for p in (tmp_path / "dups").rglob("*"))


# ------------------------------------------------------------------ whole-photo hashes


def test_hash_pairs_equal_the_all_pairs_scan():
    from facesearch.search.dedupe import PHASH_BITS, _hash_pairs
    from facesearch.photos.load import hamming64

    rng = np.random.default_rng(3)
    base = [int(x) for x in rng.integers(-2**63, 2**63 - 1, 300, dtype=np.int64)]
    hashes = [(f"p{k}", h) for k, h in enumerate(base)]
    for k in range(60):  # near copies: flip 0..PHASH_BITS+1 random bits
        h = base[k] & 0xFFFF_FFFF_FFFF_FFFF
        for b in rng.choice(64, k % (PHASH_BITS + 2), replace=False):
            h ^= 1 << int(b)
        hashes.append((f"c{k}", h - (1 << 64) if h >= 1 << 63 else h))
    want = {tuple(sorted((a, b))) for (a, ha), (b, hb) in itertools.combinations(hashes, 2)
            if hamming64(ha, hb) <= PHASH_BITS}
    assert _hash_pairs(hashes) == want and len(want) >= 40


def test_a_resized_recompressed_copy_is_a_duplicate_photo_even_when_faces_drift(tmp_path):
    from PIL import Image

    from facesearch.indexing.run import IndexOptions, index_collection
    from facesearch.photos.synthetic import make_identity_folder

    src = make_identity_folder(tmp_path / "photos", n_people=3, per_person=2, size=160, seed=4)
    orig = sorted((src / "person_01").iterdir())[0]
    img = Image.open(orig).convert("RGB")
    img.resize((120, 120)).save(src / "person_01" / "small copy.jpg", quality=60)
    idx = tmp_path / "idx"
    index_collection(IndexOptions(paths=[str(src)], index=idx, detector="none", workers=0))
    # A τ so tight that no face pair links: only the whole-photo hash can find the copy.
    report = find_duplicates(DedupeOptions(index=idx, tau=1e-4, scope="photos"))
    groups = [{Path(m["path"]).name for m in g["members"]} for g in report["groups"]]
    assert {orig.name, "small copy.jpg"} in groups
    (g,) = [g for g in report["groups"] if len(g["members"]) == 2 and "small copy.jpg" in str(g)]
    assert Path(g["keeper"]).name == orig.name  # the larger, original photo stays
