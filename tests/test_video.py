"""Clips: decoding (rotation, frame rates, 10-bit, bad files), tracking, and indexing real clips made in code
from ../shared/data photos, checked against when each person is on screen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facesearch.core.errors import BadImageError
from facesearch.faces.face import Face
from facesearch.indexing.video_tracks import LinkRule, Seen, Tracker, kept_faces
from facesearch.photos.video import is_video, probe, sample_frames
from facesearch.photos.video_make import Shot, truncate, write_clip
from facesearch.search.moments import clock, span

pytest.importorskip("av")

EVERY = 0.5  # the default sampling interval: moments are checked to within it


def _marker() -> np.ndarray:
    """A frame whose top-left quarter is white and the rest black: its orientation is visible."""
    img = np.zeros((60, 80, 3), np.uint8)
    img[:30, :40] = 255
    return img


def _corners(img: np.ndarray) -> tuple[float, float]:
    h, w = img.shape[:2]
    return float(img[: h // 2, : w // 2].mean()), float(img[h // 2:, w // 2:].mean())


# --- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rotate", [0, 90, -90, 180])
def test_sideways_clips_are_turned_upright(tmp_path, rotate):
    clip = tmp_path / "c.mp4"
    write_clip(clip, [Shot([_marker()], 1.0, "still")], rotate=rotate)
    info = probe(clip)
    assert (info.width, info.height) == (320, 240)
    assert info.rotation % 360 == rotate % 360
    for s in sample_frames(clip):
        assert s.image.shape == (240, 320, 3)
        top_left, bottom_right = _corners(s.image)
        assert top_left > 150 and bottom_right < 60  # as shown, not as stored


def test_samples_follow_timestamps_at_the_rate_asked(tmp_path):
    clip = tmp_path / "c.mp4"
    write_clip(clip, [Shot([_marker()], 4.0, "still")], fps=10)
    times = [s.time_s for s in sample_frames(clip, every_s=0.5)]
    assert times[0] == 0.0 and times[-1] >= 3.5
    # never a gap past the interval and two frames (a skipped B-frame delays a sample, never the grid)
    assert all(0 < b - a <= 0.5 + 0.2 + 1e-6 for a, b in zip(times, times[1:]))
    assert len(times) >= 8


def test_variable_frame_rate_and_ten_bit_decode(tmp_path):
    vfr, deep = tmp_path / "vfr.mp4", tmp_path / "deep.mp4"
    write_clip(vfr, [Shot([_marker()], 3.0, "still")], vfr=True)
    write_clip(deep, [Shot([_marker()], 1.0, "still")], ten_bit=True)
    times = [s.time_s for s in sample_frames(vfr, every_s=0.5)]
    assert times[-1] >= 2.4 and all(b - a <= 0.5 + 0.2 for a, b in zip(times, times[1:]))  # a frame is ≤ 0.17 s
    img = next(iter(sample_frames(deep))).image
    assert img.dtype == np.uint8 and _corners(img)[0] > 150


def test_clips_are_told_by_content_not_name(tmp_path):
    clip = tmp_path / "holiday.jpg"
    write_clip(tmp_path / "c.mp4", [Shot([_marker()], 0.5, "still")])
    (tmp_path / "c.mp4").rename(clip)
    photo = tmp_path / "photo.mp4"
    from PIL import Image

    Image.fromarray(_marker()).save(photo, "JPEG")
    assert is_video(clip) and not is_video(photo)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypmp42" + bytes(4000), b"not a video at all" * 10])
def test_bad_clips_are_one_typed_error(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(BadImageError, match="cannot read video"):
        list(sample_frames(bad))


def test_a_clip_cut_short_is_bad_or_keeps_what_came_before(tmp_path):
    mp4, mkv = tmp_path / "c.mp4", tmp_path / "c.mkv"
    noise = np.random.default_rng(0).integers(0, 255, (120, 100, 3), dtype=np.uint8)  # every frame costs bytes
    for clip in (mp4, mkv):
        write_clip(clip, [Shot([noise], 3.0, "pan")])
        truncate(clip, clip.with_name("cut" + clip.suffix), keep=0.5)
    with pytest.raises(BadImageError):  # MP4 keeps its index at the end: nothing to read without it
        list(sample_frames(tmp_path / "cut.mp4"))
    times = [s.time_s for s in sample_frames(tmp_path / "cut.mkv")]  # Matroska streams: the first part reads
    assert times and times[-1] < 3.0


# --- tracking ----------------------------------------------------------------------------------


def _seen(t: float, box, person: np.ndarray, q: float = 10.0) -> Seen:
    return Seen(t, Face(tuple(map(float, box)), 0.9), person, q)


def _people(n: int, dim: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return list(x / np.linalg.norm(x, axis=1, keepdims=True))


def test_tracker_links_by_overlap_and_face_and_keeps_the_best():
    a, b = _people(2)
    rule = LinkRule(tau=0.8, tau_strict=0.6, keep=2, quality_min=5.0)
    tr = Tracker(rule)
    ended = []
    for k in range(6):  # A walks right, B walks left: their boxes cross at k=3
        ended += tr.update(k * 0.5, [_seen(k * 0.5, (10 + 20 * k, 0, 60 + 20 * k, 50), a, q=k),
                                     _seen(k * 0.5, (110 - 20 * k, 0, 160 - 20 * k, 50), b, q=10 - k)])
    ended += tr.update(9.0, [_seen(9.0, (0, 0, 50, 50), a)])  # after a gap: a new appearance
    tracks = ended + tr.finish()
    assert len(tracks) == 3
    first_a = next(t for t in tracks if t.start_s == 0 and np.allclose(t.last.embedding, a))
    assert (first_a.start_s, first_a.end_s, first_a.seen) == (0.0, 2.5, 6)
    assert [s.quality for s in kept_faces(first_a, rule)] == [5]  # the best two, through the gate
    assert all(np.allclose(s.embedding, t.last.embedding) for t in tracks for s in t.best)  # never mixed


def test_a_cut_links_only_the_same_face():
    a, b = _people(2)
    tr = Tracker(LinkRule(tau=2.1, tau_strict=0.6))  # τ loose enough for anyone: only the cut keeps them apart
    tr.update(0.0, [_seen(0.0, (0, 0, 50, 50), a)])
    tr.update(0.5, [_seen(0.5, (0, 0, 50, 50), b)], cut=True)
    assert len(tr.finish()) == 2


def test_clock_and_span():
    assert clock(3.44) == "0:03.4" and clock(62.0) == "1:02.0" and clock(3723.0) == "1:02:03.0"
    assert span({"start_s": 3.4, "end_s": 7.9}) == "0:03.4–0:07.9" and span({"path": "x.jpg"}) == ""


# --- indexing real clips ------------------------------------------------------------------------


def _faces(shared: Path, subject: str) -> list[np.ndarray]:
    from facesearch.photos.load import load_array

    return [load_array(p) for p in sorted((shared / "train" / "yalefaces" / subject).iterdir())[:4]]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (shared / "train" / "yalefaces").is_dir():
        pytest.skip("../shared/data is absent")
    root = tmp_path_factory.mktemp("clips")
    a, b = _faces(shared, "subject01"), _faces(shared, "subject02")
    coll = root / "collection"
    coll.mkdir()
    truth = {
        "cuts.mp4": write_clip(coll / "cuts.mp4", [Shot([a[0]], 3.0, "pan", ("A",)), Shot([b[0]], 3.0, "zoom", ("B",)),
                                                  Shot([a[1], b[1]], 3.0, "still", ("A", "B"))]),
        "phone.mov": write_clip(coll / "phone.mov", [Shot([b[2]], 2.0, "zoom", ("B",))], rotate=-90),
    }
    write_clip(root / "whole.mp4", [Shot([a[0]], 2.0)])
    truncate(root / "whole.mp4", coll / "broken.mp4", keep=0.6)
    from PIL import Image

    Image.fromarray(a[3]).save(root / "query_a.png")
    return {"coll": coll, "index": root / "index", "truth": truth, "query": root / "query_a.png"}


def _cli(*args):
    from typer.testing import CliRunner

    from facesearch.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_index_and_query_clips_with_moments(clips):
    r = _cli("index", clips["coll"], "--index", clips["index"], "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["scanned"] == 3 and s["bad"] == 1 and "broken.mp4" in s["bad_files"][0]["path"]
    q = _cli("query", clips["query"], "--index", clips["index"], "--json", "--top", "10")
    assert q.exit_code == 0, q.output
    answer = json.loads(q.stdout)
    hits = [m for m in answer["faces"][0]["matches"] if m["distance"] <= answer["tau_same"]]  # "same person" ones
    cuts = sorted((m["start_s"], m["end_s"]) for m in hits if m["path"].endswith("cuts.mp4"))
    want = [(t["start_s"], t["end_s"]) for t in clips["truth"]["cuts.mp4"] if "A" in t["names"]]
    assert len(cuts) == len(want)  # A's two appearances, nothing of B's
    for (start, end), (ws, we) in zip(cuts, want):
        assert abs(start - ws) <= EVERY and abs(end - we) <= EVERY + 0.1
    assert all({"time_s", "track", "start_s", "end_s"} <= set(m) for m in hits)
    assert not any(m["path"].endswith("phone.mov") for m in hits)  # B only


def test_rotated_clip_is_indexed_upright_and_query_prints_moments(clips):
    _cli("index", clips["coll"], "--index", clips["index"])
    from facesearch.store.face_index import FaceIndex

    with FaceIndex.open(clips["index"], readonly=True) as store:
        ids, _ = store.all_embeddings()
        rows = [r for r in store.faces(ids.tolist()) if r.path.endswith("phone.mov")]
        moments = store.moments([r.face_id for r in rows])
    assert rows and all(m.start_s <= EVERY and m.end_s >= 2.0 - EVERY - 0.1 for m in moments.values())
    q = _cli("query", clips["query"], "--index", clips["index"])
    assert q.exit_code == 0 and "cuts.mp4 0:0" in q.stdout and "–" in q.stdout


def test_unchanged_clips_are_skipped(clips):
    _cli("index", clips["coll"], "--index", clips["index"])
    s = json.loads(_cli("index", clips["coll"], "--index", clips["index"], "--json").stdout)
    assert s["unchanged"] == 3 and s["faces"] == 0


def test_people_keep_a_track_whole_and_tracks_on_screen_together_apart(clips):
    _cli("index", clips["coll"], "--index", clips["index"])
    r = _cli("people", "--index", clips["index"], "--json", "--recluster")
    assert r.exit_code == 0, r.output
    person = {f["face_id"]: p["id"] for p in json.loads(r.stdout)["people"] for f in p["faces"]}
    from facesearch.store.face_index import FaceIndex

    with FaceIndex.open(clips["index"], readonly=True) as store:
        ids, _ = store.all_embeddings()
        rows = {row.face_id: row.path for row in store.faces(ids.tolist())}
        moments = store.moments(ids.tolist())
    tracks: dict[tuple, set] = {}
    for fid, m in moments.items():
        tracks.setdefault((rows[fid], m.track, m.start_s, m.end_s), set()).add(person.get(fid, -1))
    assert all(len(p) == 1 for p in tracks.values())  # must-link: a track is one person (or none)
    cuts = sorted((k, next(iter(p))) for k, p in tracks.items() if k[0].endswith("cuts.mp4"))
    together = [(k, p) for k, p in cuts if k[2] <= 6.5 <= k[3]]  # the shot of A and B side by side
    assert len(together) == 2 and (together[0][1] != together[1][1] or together[0][1] == -1)
    a = {p for k, p in cuts if k[2] < 1.0 or k[2] >= 5.9}  # A's two appearances (0-3 s, 6-9 s)
    b = {p for k, p in cuts if 2.5 <= k[2] <= 3.5} | {next(iter(p)) for k, p in tracks.items() if "phone" in k[0]}
    assert len(a) == 1 and len(b) == 1 and a != b and -1 not in a | b  # one person each, across clips


def test_dedupe_leaves_clips_out_of_groups_but_lists_identical_files(clips, tmp_path):
    import shutil

    coll = tmp_path / "dups"
    coll.mkdir()
    shutil.copy(clips["coll"] / "phone.mov", coll / "phone.mov")
    shutil.copy(clips["coll"] / "phone.mov", coll / "phone copy.mov")
    assert _cli("index", coll, "--index", tmp_path / "idx").exit_code == 0
    for scope in ("faces", "photos"):
        r = _cli("dedupe", "--index", tmp_path / "idx", "--scope", scope, "--json")
        assert r.exit_code == 0, r.output
        report = json.loads(r.stdout)
        assert report["groups"] == []  # a track's faces are alike by nature: no copies among them
        assert [sorted(Path(p).name for p in e) for e in report["exact_duplicates"]] == [["phone copy.mov",
                                                                                          "phone.mov"]]


def test_page_serves_a_clips_frame_and_the_clip_itself_only(clips):
    from fastapi.testclient import TestClient

    from facesearch.service.app import create_app
    from facesearch.service.state import ServeOptions

    _cli("index", clips["coll"], "--index", clips["index"])
    client = TestClient(create_app(ServeOptions(index=clips["index"])), base_url="http://127.0.0.1:8750")
    with open(clips["query"], "rb") as fp:
        answer = client.post("/api/query", files={"image": ("a.png", fp, "image/png")}).json()
    hit = answer["faces"][0]["matches"][0]
    assert hit["path"].endswith("cuts.mp4") and hit["start_s"] <= hit["time_s"] <= hit["end_s"]
    thumb = client.get(f"/api/faces/{hit['face_id']}/thumb")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    part = client.get(f"/api/faces/{hit['face_id']}/clip", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == (clips["coll"] / "cuts.mp4").read_bytes()[:100]
    assert client.get("/api/faces/999999/clip").status_code == 404
    assert client.get(f"/api/faces/{hit['face_id']}/clip", headers={"Host": "evil.example"}).status_code == 421
    assert "media-src 'self'" in client.get("/").headers["content-security-policy"]


def test_html_report_shows_the_frame_and_plays_from_the_moment(clips, tmp_path):
    _cli("index", clips["coll"], "--index", clips["index"])
    out = tmp_path / "report.html"
    r = _cli("query", clips["query"], "--index", clips["index"], "--html", out)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "<video" in text and "cuts.mp4#t=" in text and "0:0" in text


def test_watch_picks_up_a_new_clip_and_remove_verify_know_clips(clips, tmp_path):
    import shutil

    from facesearch.indexing.watch import WatchOptions, handle_batch
    from facesearch.indexing.work import IndexOptions
    from facesearch.store.face_index import FaceIndex

    folder, idx = tmp_path / "inbox", tmp_path / "idx"
    folder.mkdir()
    clip = folder / "new.mov"
    shutil.copy(clips["coll"] / "phone.mov", clip)
    events: list = []
    totals = {"batches": 0, "indexed": 0, "faces": 0, "moved": 0, "pruned": 0, "errors": 0}
    handle_batch(WatchOptions(IndexOptions(paths=[str(folder)], index=idx)), {str(clip)}, events.append, totals)
    assert totals["indexed"] == 1 and totals["faces"] > 0, events
    with FaceIndex.open(idx, readonly=True) as store:
        ids, _ = store.all_embeddings()
        assert len(ids) and set(store.moments(ids.tolist())) == set(ids.tolist())
    v = _cli("verify", "--index", idx, "--json")
    assert v.exit_code == 0, v.output
    assert _cli("remove", clip, "--index", idx).exit_code == 0
    with FaceIndex.open(idx, readonly=True) as store:
        assert store.count() == 0 and store.moments(ids.tolist()) == {}  # its moments went with its faces


def test_bench_scores_appearances_against_the_truth():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_video", Path(__file__).resolve().parents[1] / "bench" / "video.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    truth = [{"start_s": 0.0, "end_s": 4.0, "names": ["A"]}, {"start_s": 4.0, "end_s": 9.0, "names": ["B", "A"]}]
    s = bench.score({"A": [(0.5, 3.5), (20.0, 21.0)], "B": [(4.0, 8.5)]}, truth)
    assert (s["recall"], s["appearances"], s["false_hits"]) == (round(2 / 3, 3), 3, 1)
    assert s["time_err_max_s"] == 0.5 and s["time_err_mean_s"] == round((0.5 + 0.5 + 0 + 0.5) / 4, 2)
    assert bench._merge([0.0, 0.5, 1.0, 3.0, 3.4]) == [(0.0, 1.0), (3.0, 3.4)]
