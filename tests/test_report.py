"""Visual reports: self-contained HTML (parsed and counted) and PNG contact sheets.

Inputs are synthetic photos and hand-built result dicts of the shapes that
search/dedupe/evaluate/pipeline return, so nothing here needs a model or an index.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch.core.errors import DataError
from facesearch.eval.protocol import verification_report
from facesearch.report import (
    dedupe_sheet, query_sheet, render_dedupe_html, render_evaluate_html, render_index_html, render_query_html,
)
from facesearch.report.html import crop_face, placeholder
from facesearch.report.sheet import KEEP_GREEN
from facesearch.photos.synthetic import compose_photo, make_identities, make_identity_folder, render_face

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
EVIL = 'a<b>&"c.png'  # a file name that must be escaped everywhere


class PageCheck(HTMLParser):
    """Counts <img> by class, collects their src, and checks that tags balance."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.imgs: Counter = Counter()
        self.srcs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs[a.get("class", "")] += 1
            self.srcs.append(a.get("src", ""))
        if tag == "script":
            self.scripts += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def check_page(text: str) -> PageCheck:
    """Parse ``text``; assert it is balanced, fully inlined and refers to nothing on the network."""
    p = PageCheck()
    p.feed(text)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert text.startswith("<!DOCTYPE html>")
    assert "http://" not in text and "https://" not in text
    assert all(s.startswith("data:image/") for s in p.srcs)
    return p


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> list[Path]:
    """9 photos of 3 synthetic people (96 x 96), plus one with a hostile file name."""
    root = make_identity_folder(tmp_path_factory.mktemp("people"), n_people=3, per_person=3, size=96, seed=0)
    files = sorted(root.rglob("*.png"))
    evil = root / EVIL
    shutil.copy(files[0], evil)
    return files + [evil]


@pytest.fixture(scope="module")
def group_photo(tmp_path_factory) -> tuple[Path, list]:
    rng = np.random.default_rng(1)
    faces = [render_face(i, rng, size=120, alpha=True) for i in make_identities(2, seed=3)]
    photo, boxes = compose_photo(faces, (400, 300), rng)
    path = tmp_path_factory.mktemp("query") / "group.jpg"
    photo.save(path, quality=90)
    return path, [list(map(float, b)) for b in boxes]


def _match(path, d, label="person_00", box=(10, 10, 86, 86)):
    return {"path": str(path), "box": list(box), "distance": d, "similarity": round(1 - d * d / 2, 4),
            "label": label, "face_id": 1}


@pytest.fixture()
def query_results(people, group_photo, tmp_path):
    qpath, boxes = group_photo
    missing = tmp_path / "gone.jpg"
    face = lambda b, ident, ms: {"box": b, "score": 0.9, "identity": ident, "margin": 0.2, "tau": 0.8,  # noqa: E731
                                 "matches": ms}
    return [
        {"query": str(qpath), "faces": [
            face(boxes[0], "person_00", [_match(people[0], 0.31), _match(people[1], 0.45), _match(missing, 0.5)]),
            face(boxes[1], None, [_match(people[3], 0.9, None), _match(people[9], 0.95), _match(people[4], 1.0)]),
        ]},
        {"query": str(missing), "faces": [], "error": "cannot read image: file not found"},
    ]


@pytest.fixture()
def dedupe_report(people, tmp_path):
    def m(p, box=(20, 20, 60, 60)):
        return {"face_id": 1, "path": str(p), "box": list(box), "label": None, "size": 1, "mtime_ns": 0}
    groups = [
        {"members": [m(people[0]), m(people[1])], "keeper": str(people[0]), "max_distance": 0.2, "mean_distance": 0.2},
        {"members": [m(people[3]), m(people[4]), m(people[9])], "keeper": str(people[4]),
         "max_distance": 0.3, "mean_distance": 0.25},
        {"members": [m(people[6]), m(tmp_path / "missing.png")], "keeper": str(people[6]),
         "max_distance": 0.1, "mean_distance": 0.1},
    ]
    return {"tau": 0.4, "scope": "faces", "keep": "largest", "n_pairs": 4, "n_groups": 3, "n_members": 7,
            "groups": groups, "exact_duplicates": [[str(people[0]), str(people[9])]]}


# ----------------------------------------------------------------------------- HTML reports


def test_query_html(query_results, tmp_path):
    out = tmp_path / "q.html"
    text = render_query_html(query_results, out)
    assert out.read_text(encoding="utf-8") == text
    p = check_page(text)
    assert p.imgs == {"photo": 2, "face": 2, "match": 6}
    assert "person_00" in text and "unknown" in text
    assert "file not found" in text  # missing match and missing query both explained
    assert EVIL not in text and "a&lt;b&gt;&amp;&quot;c.png" in text
    assert p.scripts == 0


def test_dedupe_html(dedupe_report, tmp_path):
    out = tmp_path / "d.html"
    text = render_dedupe_html(dedupe_report, out)
    p = check_page(text)
    assert p.imgs["thumb"] == 7 and p.imgs["xthumb"] == 1
    heads = re.findall(r"<h3>Group (\d+): (\d+) members", text)
    assert heads == [("1", "3"), ("2", "2"), ("3", "2")]  # sorted by size
    assert text.count("badge keep") == 3
    assert text.count('class="cell keeper"') == 3
    assert "file not found" in text
    assert EVIL not in text and "&lt;b&gt;" in text
    assert p.scripts == 1  # only the loaded-thumbnail counter


def test_dedupe_photo_scope_uses_whole_photos(dedupe_report):
    for g in dedupe_report["groups"]:
        for m in g["members"]:
            m["box"] = [20, 20, 60, 80]  # a tall 60 x 90 crop (with margin) in face scope
    faces = render_dedupe_html(dedupe_report)
    sizes = re.findall(r'<img class="thumb" src="[^"]+" width="(\d+)" height="(\d+)"', faces)
    assert sorted(sizes) == [("112", "112")] + [("75", "112")] * 6  # placeholder + face crops
    for g in dedupe_report["groups"]:
        for m in g["members"]:
            m.pop("box")
    dedupe_report["scope"] = "photos"
    photos = render_dedupe_html(dedupe_report)
    sizes = re.findall(r'<img class="thumb" src="[^"]+" width="(\d+)" height="(\d+)"', photos)
    assert sorted(sizes) == [("112", "112")] * 7  # whole square photos


def test_dedupe_caps_groups(dedupe_report):
    text = render_dedupe_html(dedupe_report, max_groups=2, max_members=2)
    assert check_page(text).imgs["thumb"] == 4
    assert "showing the 2 largest of 3 groups" in text and "and 1 more" in text


def test_evaluate_html(people, tmp_path):
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(60, bool), np.zeros(140, bool)]
    dist = np.where(same, rng.normal(0.7, 0.15, 200), rng.normal(1.1, 0.15, 200))
    report = verification_report(dist, same, folds=5)
    pairs = [(str(people[i % 10]), str(people[(i + 1) % 10])) for i in range(200)]
    text = render_evaluate_html(report, dist, same, tmp_path / "e.html", pairs=pairs)
    p = check_page(text)
    assert p.imgs == {"plot": 3, "pairthumb": 2 * 2 * 8}
    assert "roc_auc" in text and f"{report['roc_auc']:.4f}" in text
    # Oracle for the mistake flags: impostors at or under tau are false accepts.
    n_fa = int(np.sum(np.sort(dist[~same])[:8] <= report["tau"]))
    n_fr = int(np.sum(np.sort(dist[same])[::-1][:8] > report["tau"]))
    assert text.count("false accept") == n_fa and text.count("false reject") == n_fr
    with pytest.raises(DataError):
        render_evaluate_html(report, dist, same, pairs=pairs[:10])


def test_evaluate_html_without_pairs():
    same = np.array([True, True, True, False, False, False, False])
    dist = np.array([0.2, 0.5, 0.9, 0.4, 1.0, 1.2, 1.3])
    text = render_evaluate_html(verification_report(dist, same, folds=2), dist, same)
    assert check_page(text).imgs == {"plot": 3}


def test_index_html(people, tmp_path):
    summary = {"index": "x", "scanned": 4, "new": 4, "updated": 0, "unchanged": 0, "bad": 1, "noface": 0,
               "faces": 3, "pruned": 0, "seconds": 1.5, "files_per_s": 2.67,
               "bad_files": [{"path": str(tmp_path / "bad<1>.jpg"), "error": "not a recognised image"}]}
    sample = [{"path": str(people[0]), "boxes": [[10, 10, 80, 80]]}, {"path": str(people[9]), "boxes": []},
              {"path": str(tmp_path / "nope.jpg"), "boxes": [[0, 0, 5, 5]]}]
    text = render_index_html(summary, sample, tmp_path / "i.html")
    p = check_page(text)
    assert p.imgs == {"sample": 3}
    assert "not a recognised image" in text and "bad&lt;1&gt;.jpg" in text
    assert "file not found" in text


def test_reports_import_no_torch():
    code = "import sys, facesearch.report; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- image helpers


def test_placeholder_and_crop():
    img = placeholder("file not found: /x/y.jpg", 112)
    assert img.size == (112, 112) and img.getpixel((110, 110)) == (200, 200, 200)
    src = Image.new("RGB", (100, 80))
    assert crop_face(src, [10, 10, 50, 50]).size == (60, 60)  # 25 % margin each side
    assert crop_face(src, [-20, -20, 30, 30]).size == (42, 42)  # clamped to the image
    with pytest.raises(ValueError):
        crop_face(src, [200, 200, 250, 250])


# ----------------------------------------------------------------------------- PNG sheets


def _green_pixels(path: Path) -> int:
    a = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    return int((a == np.array(KEEP_GREEN)).all(axis=1).sum())


def test_dedupe_sheet(dedupe_report, tmp_path):
    out = dedupe_sheet(dedupe_report, tmp_path / "d.png")
    img = Image.open(out)
    assert img.format == "PNG" and img.width == 1000 and img.height > 3 * 112
    # The keeper frames are the only pure KEEP_GREEN pixels: 3 frames of 2 px round a thumbnail.
    assert _green_pixels(out) >= 3 * 4 * 50
    for g in dedupe_report["groups"]:
        g["keeper"] = None
    assert _green_pixels(dedupe_sheet(dedupe_report, tmp_path / "d2.png")) == 0


def test_query_sheet(query_results, tmp_path):
    out = query_sheet(query_results, tmp_path / "q.png")
    img = Image.open(out)
    assert img.format == "PNG" and img.width == 1000
    # 2 query rows + 2 face rows, each at least a thumbnail tall.
    assert img.height > 4 * 112


# ----------------------------------------------------------------------------- headless browser


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or \
        ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def chromium_args(browser: str, profile: Path) -> list[str]:
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed")
def test_dedupe_renders_in_chromium(dedupe_report, tmp_path):
    page = render_dedupe_html(dedupe_report, tmp_path / "d.html")
    assert page
    cmd = chromium_args(_chromium(), tmp_path / "profile") + [
        "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "d.html").as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'data-loaded-thumbs="(\d+)"', dom)
    assert m, dom[-2000:]
    # Every thumbnail decodes, the placeholder for the missing file included.
    assert int(m.group(1)) == 7
