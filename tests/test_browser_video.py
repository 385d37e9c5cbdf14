"""The page shows a clip's hit (issue 40): searching a photo's face in headless Chromium lists the clip
with its moment and a player that starts there, under the page's own Content-Security-Policy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facesearch.cli.main import app as cli
from facesearch.photos.video_make import Shot, write_clip
from facesearch.service.app import create_app
from facesearch.service.state import ServeOptions
from facesearch.store.face_index import FaceIndex
from tests.test_browser import TOKEN, _serve, browser, open_view, shot, until  # noqa: F401 (browser: a fixture)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def clip_site(tmp_path_factory):
    """A collection of one photo of a person and a clip where that person appears after another."""
    if not (SHARED / "train" / "yalefaces").is_dir():
        pytest.skip("../shared/data is absent")
    from PIL import Image

    from facesearch.photos.load import load_array

    faces = {s: [load_array(p) for p in sorted((SHARED / "train" / "yalefaces" / s).iterdir())[:3]]
             for s in ("subject01", "subject02")}
    root = tmp_path_factory.mktemp("browser-video")
    (root / "coll").mkdir()
    write_clip(root / "coll" / "holiday.mp4", [Shot([faces["subject02"][0]], 2.0, "still", ("B",)),
                                               Shot([faces["subject01"][0]], 3.0, "pan", ("A",))])
    Image.fromarray(faces["subject01"][2]).save(root / "coll" / "ann.png")
    r = CliRunner().invoke(cli, ["index", str(root / "coll"), "--index", str(root / "idx"), "--workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    with FaceIndex.open(root / "idx", readonly=True) as store:
        ids, _ = store.all_embeddings()
        (photo_face,) = [f.face_id for f in store.faces(ids.tolist()) if f.path.endswith("ann.png")]
    port, stop = _serve(create_app(ServeOptions(index=root / "idx", token=TOKEN)))
    yield f"http://127.0.0.1:{port}/?token={TOKEN}", photo_face
    stop()


def test_a_clip_hit_shows_its_moment_and_plays_from_it(clip_site, browser):  # noqa: F811
    url, face = clip_site
    open_view(browser, url, f"#face={face}")
    until(browser, lambda d: d.execute_script("return document.body.dataset.faces") == "1", "the search answers")
    first, *rest = browser.find_elements("css selector", ".face-result .cell")  # nearest first
    assert "the same" in first.text and "holiday.mp4" in first.text, first.text
    src = first.find_element("css selector", "video.clip").get_attribute("src")
    assert "/api/faces/" in src and "/clip" in src.split("#")[0]
    start, end = (float(v) for v in re.search(r"#t=([\d.]+),([\d.]+)$", src).groups())
    assert 1.5 <= start <= 2.6 and end >= 4.0  # A comes on at 2 s (a frame every 0.5 s) and stays to the end
    moment = first.find_element("css selector", ".moment").text
    assert re.fullmatch(r"0:0\d\.\d–0:0\d\.\d", moment) and moment.startswith("0:02"), moment
    # B's appearance may be listed too, but never as the same person.
    assert all("the same" not in c.text for c in rest if "0:00" in c.text)
    shot(browser, "search-video")
