"""XMP face regions: read what exiftool wrote (MWG, MP, embedded, both sidecar names, rotated photos,
malformed XMP), and write regions exiftool reads back (names, areas within 1 % of the face box), merging
into what is there and, embedded, changing nothing but the XMP."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from facesearch.faces.face import iou
from facesearch.photos.xmp import read_regions, sidecar_path, sidecar_signature
from facesearch.photos.xmp_frame import Frame, read_frame, to_display, to_stored
from facesearch.photos.xmp_write import EMPTY_PACKET, NamedFace, merge_regions

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool (libimage-exiftool-perl) is not installed: "
                                                             "the independent XMP reader/writer these tests check against")


def same_face(a, b) -> bool:
    return iou(a, b) >= 0.5


def exiftool(*args: str) -> str:
    return subprocess.run([EXIFTOOL, "-q", "-m", *args], check=True, capture_output=True, text=True).stdout


def mwg_arg(name: str, x: float, y: float, w: float, h: float, dims=(400, 300)) -> str:
    return (f"-RegionInfo={{AppliedToDimensions={{W={dims[0]},H={dims[1]},Unit=pixel}},RegionList=[{{Area={{X={x},"
            f"Y={y},W={w},H={h},Unit=normalized}},Name={name},Type=Face}}]}}")


def mp_arg(name: str, x: float, y: float, w: float, h: float) -> str:
    return f"-RegionInfoMP={{Regions=[{{PersonDisplayName={name},Rectangle={x}|, {y}|, {w}|, {h}}}]}}"


def regions_by_exiftool(path) -> dict:
    return json.loads(exiftool("-struct", "-j", "-RegionInfo", "-RegionInfoMP", str(path)))[0]


@pytest.fixture
def photo(tmp_path):
    """A 400x300 JPEG with texture (so a re-encode would show in the pixels)."""
    rng = np.random.default_rng(0)
    p = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(p, quality=90)
    return p


def near(box, expected, tol=0.5):
    return all(abs(a - b) <= tol for a, b in zip(box, expected))


# --- reading what exiftool wrote --------------------------------------------------------------


@needs_exiftool
def test_reads_embedded_mwg(photo):
    exiftool("-overwrite_original", mwg_arg("Alice Smith", 0.5, 0.5, 0.2, 0.3), str(photo))
    [r] = read_regions(photo).regions
    assert (r.name, r.schema, r.source) == ("Alice Smith", "mwg", "embedded")
    assert near(r.box, (160, 105, 240, 195))  # centre-based area, in pixels


@needs_exiftool
def test_reads_embedded_mp(photo):
    exiftool("-overwrite_original", mp_arg("Bob", 0.1, 0.2, 0.25, 0.3), str(photo))
    [r] = read_regions(photo).regions
    assert (r.name, r.schema) == ("Bob", "mp")
    assert near(r.box, (40, 60, 140, 150))  # top-left based rectangle


@needs_exiftool
@pytest.mark.parametrize("naming", ["full", "stem"])
def test_reads_both_sidecar_names(photo, naming):
    side = sidecar_path(photo, naming)
    assert side.name == {"full": "photo.jpg.xmp", "stem": "photo.xmp"}[naming]
    exiftool("-o", str(side), mwg_arg("Carol", 0.25, 0.5, 0.1, 0.2), str(photo))
    [r] = read_regions(photo).regions
    assert (r.name, r.source) == ("Carol", side.name)
    assert sidecar_signature(photo).startswith(side.name)


def test_malformed_xmp_is_a_warning(photo):
    sidecar_path(photo).write_text("<x:xmpmeta><rdf:RDF><broken")
    got = read_regions(photo)
    assert got.regions == [] and len(got.warnings) == 1
    assert "malformed XMP" in got.warnings[0] and "photo.jpg.xmp" in got.warnings[0]
    jpg = photo.read_bytes()  # a broken XMP segment inside the photo itself
    payload = b"http://ns.adobe.com/xap/1.0/\x00<?xpacket begin=''?><x:xmpmeta xmlns:x='adobe:ns:meta/'><oops>"
    photo.write_bytes(jpg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpg[2:])
    sidecar_path(photo).unlink()
    got = read_regions(photo)
    assert got.regions == [] and "malformed XMP" in got.warnings[0]


def test_photo_without_xmp_has_no_regions_and_no_warnings(photo):
    assert read_regions(photo).regions == [] and read_regions(photo).warnings == []


# --- orientation ------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_frame_round_trip(orientation):
    frame = Frame(400, 300, orientation)
    box = (30.0, 50.0, 90.0, 170.0)
    assert near(to_display(frame, to_stored(frame, box)), box, 1e-6)


@needs_exiftool
def test_rotated_photo_regions_are_on_the_stored_image(photo):
    """Orientation 6 (rotate 90° clockwise to view): a face at the stored image's top-left shows at the
    rotated image's top-right; MWG's area and AppliedToDimensions stay those of the stored image."""
    exiftool("-overwrite_original", "-Orientation#=6", mwg_arg("Dan", 0.15, 0.2, 0.1, 0.2), str(photo))
    frame = read_frame(photo)
    assert (frame.orientation, frame.display_size) == (6, (300, 400))
    [r] = read_regions(photo).regions
    # stored (x 0.1-0.2, y 0.1-0.3) -> rotated: x = (1 - v) * 300, y = u * 400
    assert near(r.box, (210, 40, 270, 80))
    merged = merge_regions(EMPTY_PACKET, frame, [NamedFace("Eve", r.box)], same_face)
    side = sidecar_path(photo)
    side.write_bytes(merged.data)
    info = regions_by_exiftool(side)["RegionInfo"]
    assert info["AppliedToDimensions"]["W"] == 400 and info["AppliedToDimensions"]["H"] == 300
    area = info["RegionList"][0]["Area"]
    assert near((area["X"], area["Y"], area["W"], area["H"]), (0.15, 0.2, 0.1, 0.2), 0.01)


@needs_exiftool
def test_regions_written_on_the_rotated_image_are_recognised(photo):
    """Some tools write AppliedToDimensions of the rotated image: those regions need no turning."""
    exiftool("-overwrite_original", "-Orientation#=6", mwg_arg("Fay", 0.5, 0.25, 0.2, 0.1, dims=(300, 400)),
             str(photo))
    [r] = read_regions(photo).regions
    assert near(r.box, (120, 80, 180, 120))


# --- writing, read back by exiftool -----------------------------------------------------------


@needs_exiftool
def test_export_is_read_back_by_exiftool(photo):
    faces = [NamedFace("Alice Smith", (40.0, 30.0, 120.0, 130.0)), NamedFace("Bob", (200.0, 100.0, 260.0, 180.0))]
    merged = merge_regions(EMPTY_PACKET, read_frame(photo), faces, same_face)
    assert merged.added == 2
    side = sidecar_path(photo)
    side.write_bytes(merged.data)
    got = regions_by_exiftool(side)
    for face, item, mp in zip(faces, got["RegionInfo"]["RegionList"], got["RegionInfoMP"]["Regions"]):
        assert item["Name"] == face.name == mp["PersonDisplayName"] and item["Type"] == "Face"
        a = item["Area"]
        x1, y1, x2, y2 = face.box
        assert a["Unit"] == "normalized"
        assert abs(a["X"] * 400 - (x1 + x2) / 2) <= 4 and abs(a["Y"] * 300 - (y1 + y2) / 2) <= 3  # 1 %
        assert abs(a["W"] * 400 - (x2 - x1)) <= 4 and abs(a["H"] * 300 - (y2 - y1)) <= 3
        rx, ry, rw, rh = (float(v) for v in str(mp["Rectangle"]).split(","))
        assert abs(rx * 400 - x1) <= 4 and abs(ry * 300 - y1) <= 3 and abs(rw * 400 - (x2 - x1)) <= 4
    assert [r.name for r in read_regions(photo).regions] == ["Alice Smith", "Bob", "Alice Smith", "Bob"]


@needs_exiftool
def test_merge_keeps_foreign_regions_and_updates_the_same_face(photo):
    side = sidecar_path(photo)
    exiftool("-o", str(side), mwg_arg("Stranger", 0.8, 0.8, 0.1, 0.1), "-XMP-dc:Subject=holiday", str(photo))
    first = merge_regions(side.read_bytes(), read_frame(photo), [NamedFace("Alice", (40.0, 30.0, 120.0, 130.0))],
                          same_face)
    assert (first.added, first.kept) == (1, 1)
    side.write_bytes(first.data)
    # the same face again, a little moved and renamed: updated in place, not duplicated
    again = merge_regions(side.read_bytes(), read_frame(photo), [NamedFace("Alice B", (42.0, 31.0, 121.0, 131.0))],
                          same_face)
    assert (again.added, again.updated, again.renamed) == (0, 1, [{"from": "Alice", "to": "Alice B"}])
    side.write_bytes(again.data)
    got = regions_by_exiftool(side)
    assert [r["Name"] for r in got["RegionInfo"]["RegionList"]] == ["Stranger", "Alice B"]
    assert [r["PersonDisplayName"] for r in got["RegionInfoMP"]["Regions"]] == ["Alice B"]
    assert "holiday" in exiftool("-XMP-dc:Subject", str(side))


@needs_exiftool
def test_embed_changes_only_the_xmp(photo):
    before = photo.read_bytes()
    pixels = np.asarray(Image.open(photo))
    merged = merge_regions(before, read_frame(photo), [NamedFace("Alice", (40.0, 30.0, 120.0, 130.0))], same_face)
    photo.write_bytes(merged.data)
    assert photo.read_bytes() != before
    assert np.array_equal(np.asarray(Image.open(photo)), pixels)
    assert regions_by_exiftool(photo)["RegionInfo"]["RegionList"][0]["Name"] == "Alice"
    assert jpeg_segments_but_xmp(photo.read_bytes()) == jpeg_segments_but_xmp(before)


def jpeg_segments_but_xmp(data: bytes) -> list[bytes]:
    """A JPEG's marker segments up to the scan, and the scan itself, without XMP's APP1 segments."""
    out, at = [], 2
    while data[at + 1] != 0xDA:  # start of scan: the rest is entropy-coded data
        n = int.from_bytes(data[at + 2:at + 4], "big")
        seg = data[at:at + 2 + n]
        if not (seg[1] == 0xE1 and seg[4:].startswith(b"http://ns.adobe.com/xap/1.0/")):
            out.append(seg)
        at += 2 + n
    return out + [data[at:]]


def test_writing_into_malformed_xmp_is_refused(photo):
    with pytest.raises(ValueError):
        merge_regions(b"<?xpacket begin=''?><x:xmpmeta xmlns:x='adobe:ns:meta/'><oops>", read_frame(photo),
                      [NamedFace("A", (1.0, 1.0, 5.0, 5.0))], same_face)
