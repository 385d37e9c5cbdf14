"""Tests for facesearch.photos.load and facesearch.photos.scan: decoding every supported mode, typed errors, scanning, hashing.

Every file is generated in ``tmp_path``; expected pixels come from numpy oracles.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from facesearch.photos import load
from facesearch.core.errors import BadImageError, FacesearchError
from facesearch.photos.load import DEFAULT_MAX_PIXELS, load_array, load_image
from facesearch.photos.scan import IMAGE_EXTS, FileStat, content_hash, scan_images, stat_file

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def solid(color, size=(32, 24), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def save(image: Image.Image, path: Path, **kw) -> Path:
    image.save(path, **kw)
    return path


def opened(path: Path) -> tuple[str, int]:
    """(mode, frame count) as Pillow reports them, closing the file."""
    with Image.open(path) as image:
        return image.mode, getattr(image, "n_frames", 1)


def assert_close(actual, expected, tol=3):
    diff = np.abs(np.asarray(actual, np.int32) - np.asarray(expected, np.int32))
    assert diff.max() <= tol, f"{actual} != {expected} (max diff {diff.max()})"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG whose IHDR claims ``width x height`` RGB but carries one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


# --------------------------------------------------------------------------- good files


def test_constants():
    assert {".jpg", ".jpeg", ".png", ".webp", ".tiff", ".pnm"} <= IMAGE_EXTS
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTS)
    assert DEFAULT_MAX_PIXELS == 80_000_000


def test_jpeg_exif_orientation_6_rotates(tmp_path):
    # 64x32 blue with a red 16x16 block top-left. Orientation 6 = display rotated 90° clockwise,
    # so the block lands top-right of a 32x64 image: (x, y) -> (H-1-y, x).
    image = solid(BLUE, (64, 32))
    image.paste(RED, (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(image, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (32, 64)
    assert_close(out.getpixel((31 - 8, 8)), RED, tol=20)
    assert_close(out.getpixel((8, 8)), BLUE, tol=20)


@pytest.mark.parametrize("name,kw", [
    ("a.png", {}), ("a.webp", {"lossless": True}), ("a.bmp", {}), ("a.tiff", {}),
    ("a.ppm", {}), ("a.jpg", {"quality": 95}), ("фото_ü.jpg", {"quality": 95}),
])
def test_rgb_formats_roundtrip(tmp_path, name, kw):
    path = save(solid((200, 40, 90)), tmp_path / name, **kw)
    arr = load_array(path)
    assert arr.shape == (24, 32, 3) and arr.dtype == np.uint8
    assert_close(arr, np.broadcast_to((200, 40, 90), arr.shape), tol=4)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [solid(RED), solid(GREEN), solid(BLUE)]
    path = save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    assert opened(path)[1] == 3
    assert_close(load_image(path).getpixel((5, 5)), RED)


def test_multipage_tiff_uses_first_page(tmp_path):
    path = save(solid(GREEN), tmp_path / "pages.tif", save_all=True, append_images=[solid(BLUE)])
    assert_close(load_image(path).getpixel((0, 0)), GREEN, tol=0)


def test_pgm_grey_gives_three_equal_channels(tmp_path):
    grey = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    arr = load_array(save(Image.fromarray(grey, "L"), tmp_path / "g.pgm"))
    assert (arr == grey[..., None]).all()


def test_cmyk_jpeg(tmp_path):
    path = save(solid((0, 255, 255, 0), mode="CMYK"), tmp_path / "cmyk.jpg", quality=95)
    assert opened(path)[0] == "CMYK"
    assert_close(load_image(path).getpixel((4, 4)), RED, tol=6)


def test_16bit_png_scaled_by_full_range(tmp_path):
    values = np.array([[0, 32768, 65535, 257]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    assert opened(path)[0].startswith("I;16")
    arr = load_array(path)
    assert arr[0, :, 0].tolist() == [0, 128, 255, 1]
    assert (arr == arr[..., :1]).all()


def test_16bit_pgm_mode_i_scaled(tmp_path):
    # Pillow opens 16-bit PNM as mode "I" with values rescaled to 0..65535.
    data = b"P5\n3 1\n65535\n" + np.array([0, 32768, 65535], ">u2").tobytes()
    (tmp_path / "deep.pgm").write_bytes(data)
    assert opened(tmp_path / "deep.pgm")[0] == "I"
    assert load_array(tmp_path / "deep.pgm")[0, :, 1].tolist() == [0, 128, 255]


def test_float_tiff_normalised_and_arbitrary_range(tmp_path):
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert load_array(save(Image.fromarray(unit, "F"), tmp_path / "u.tif"))[0, :, 0].tolist() == [0, 128, 255]
    wide = np.array([[-10.0, 0.0, 10.0]], np.float32)  # outside 0..1: own min..max
    assert load_array(save(Image.fromarray(wide, "F"), tmp_path / "w.tif"))[0, :, 0].tolist() == [0, 128, 255]


def test_rgba_composited_on_white_matches_oracle(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)      # fully transparent -> white
    rgba[0, 1] = (0, 0, 255, 255)    # opaque -> itself
    arr = load_array(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    alpha = rgba[..., 3:].astype(np.float64) / 255
    oracle = rgba[..., :3] * alpha + 255 * (1 - alpha)
    assert_close(arr, oracle, tol=1)
    assert tuple(arr[0, 0]) == WHITE and tuple(arr[0, 1]) == BLUE


def test_la_composited_on_white(tmp_path):
    la = np.zeros((24, 32, 2), np.uint8)
    la[:, :16, 1] = 255            # left half opaque black, right half transparent
    arr = load_array(save(Image.fromarray(la, "LA"), tmp_path / "la.png"))
    assert (arr[:, :16] == 0).all() and (arr[:, 16:] == 255).all()


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (32, 24), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 16, 24))   # left half index 1 = red; right half index 0 = transparent
    path = save(image, tmp_path / "p.png", transparency=0)
    assert opened(path)[0] == "P"
    arr = load_array(path)
    assert (arr[:, :16] == RED).all() and (arr[:, 16:] == 255).all()


def test_no_warnings_escape_for_large_but_allowed_image(tmp_path, monkeypatch, recwarn):
    # Above Pillow's warning threshold but under our cap: decoded, no warning escapes.
    # Pillow's threshold is lowered so the image can stay small.
    path = save(Image.new("L", (150, 100)), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(path).close()
    recwarn.clear()
    assert load_image(path).size == (150, 100)
    assert not list(recwarn)


# --------------------------------------------------------------------------- bad files


def expect_bad(path, *words, **kw) -> BadImageError:
    with pytest.raises(BadImageError) as info:
        load_image(path, **kw)
    err = info.value
    assert str(path) in err.message and "\n" not in err.message and err.hint
    for word in words:
        assert word in err.message.lower()
    return err


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expect_bad(path, "truncated")


def test_truncated_png(tmp_path):
    noise = np.random.default_rng(2).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expect_bad(path, "truncated")


def test_zero_bytes(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    expect_bad(tmp_path / "empty.jpg", "empty")


def test_text_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image at all\n")
    expect_bad(tmp_path / "notes.jpg", "not a recognised image")


def test_format_outside_allow_list_is_rejected(tmp_path):
    # A valid TGA: Pillow can read it, but only the IMAGE_EXTS decoders are allowed.
    path = save(solid(RED), tmp_path / "x.tga")
    expect_bad(path, "not a recognised image")


def test_missing_file(tmp_path):
    expect_bad(tmp_path / "nope.jpg", "not found")


def test_directory(tmp_path):
    (tmp_path / "d.jpg").mkdir()
    expect_bad(tmp_path / "d.jpg", "directory")


def test_fifo_is_rejected_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    expect_bad(tmp_path / "pipe.jpg", "not a regular file")


def forbid_decoding(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(self))
    return calls


def test_decompression_bomb_header_fails_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))
    calls = forbid_decoding(monkeypatch)
    expect_bad(path, "pixels")
    expect_bad(path, "pixels", max_pixels=10**11)  # Pillow's own hard limit still maps to our error
    assert calls == []


def test_pixel_cap_from_header_argument_and_env(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(10_000, 9_000))  # 90 M: over the default, under Pillow's error
    small = save(solid(RED, (100, 100)), tmp_path / "small.png")
    calls = forbid_decoding(monkeypatch)
    expect_bad(bomb, "90,000,000 pixels")
    expect_bad(small, "over the limit", max_pixels=9_999)
    monkeypatch.setenv("FACESEARCH_MAX_PIXELS", "5000")
    expect_bad(small, "over the limit of 5,000")
    assert calls == []


def test_invalid_env_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESEARCH_MAX_PIXELS", "lots")
    with pytest.raises(FacesearchError, match="FACESEARCH_MAX_PIXELS"):
        load_image(tmp_path / "x.png")


def test_permission_denied_real(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can read mode-000 files; covered by the simulated test")
    path = save(solid(RED), tmp_path / "locked.png")
    path.chmod(0)
    try:
        expect_bad(path, "permission denied")
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("target", ["open", "Image.open"])
def test_permission_denied_simulated(tmp_path, monkeypatch, target):
    path = save(solid(RED), tmp_path / "locked.png")

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    if target == "open":
        monkeypatch.setattr(load, "open", deny, raising=False)  # shadows the builtin
    else:
        monkeypatch.setattr(load.Image, "open", deny)
    expect_bad(path, "permission denied")


def test_corrupt_exif_keeps_pixels(tmp_path, monkeypatch):
    path = save(solid(RED), tmp_path / "e.jpg")

    def broken(*args, **kwargs):
        raise SyntaxError("bad exif")

    monkeypatch.setattr(load.ImageOps, "exif_transpose", broken)
    assert_close(load_image(path).getpixel((1, 1)), RED)


# --------------------------------------------------------------------------- scanning


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def oracle_scan(root: Path, exts=IMAGE_EXTS) -> list[Path]:
    """Brute force: walk real folders only (no symlinks), drop hidden names, filter by extension."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (Path(folder) / d).is_symlink()]
        out += [Path(folder) / f for f in files
                if not f.startswith(".") and Path(f).suffix.lower() in exts
                and not (Path(folder) / f).is_symlink()]
    return sorted(out)


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    for rel in ["a/x.jpg", "a/b/y.PNG", "a/b/c/deep.webp", "c.JPEG", "d.Tiff", "notes.txt",
                "a/readme.md", ".hidden/z.jpg", ".facesearch/w.jpg", "._junk.jpg", "a/.cache/q.png"]:
        touch(root / rel)
    return root


def test_scan_matches_oracle(tree):
    found = scan_images([tree])
    assert found == oracle_scan(tree)
    names = {p.name for p in found}
    assert names == {"x.jpg", "y.PNG", "deep.webp", "c.JPEG", "d.Tiff"}


def test_scan_extension_filter(tree):
    assert [p.name for p in scan_images([tree], exts={".png"})] == ["y.PNG"]
    assert [p.name for p in scan_images([tree], exts=["PNG"])] == ["y.PNG"]
    assert scan_images([tree], exts={".jpeg", ".jpg"}) == oracle_scan(tree, {".jpeg", ".jpg"})


def test_scan_explicit_files_and_missing_path(tree):
    assert scan_images([tree / "notes.txt", tree / "c.JPEG"]) == [tree / "c.JPEG", tree / "notes.txt"]
    assert scan_images([tree / ".hidden"]) == [tree / ".hidden" / "z.jpg"]  # named, so walked
    with pytest.raises(FacesearchError) as info:
        scan_images([tree, tree / "missing"])
    assert "missing" in info.value.message and info.value.hint


def test_scan_symlink_loop_terminates_without_duplicates(tree):
    (tree / "a" / "b" / "loop").symlink_to(tree)         # dir link to an ancestor
    (tree / "a" / "self").symlink_to(".")               # dir link to itself
    (tree / "twin.jpg").symlink_to(tree / "c.JPEG")     # file reached twice
    (tree / "dangling.jpg").symlink_to(tree / "gone.jpg")
    found = scan_images([tree, tree / "a"])             # overlapping roots too
    assert found == sorted(set(found))
    assert len({os.path.realpath(p) for p in found}) == len(found) == 5
    assert found == oracle_scan(tree)


def test_scan_follows_symlinked_dirs_only_when_asked(tmp_path, tree):
    outside = touch(tmp_path / "elsewhere" / "e.jpg").parent
    (tree / "linked").symlink_to(outside, target_is_directory=True)
    assert tree / "linked" / "e.jpg" in scan_images([tree])
    assert tree / "linked" / "e.jpg" not in scan_images([tree], follow_symlinks=False)
    assert scan_images([tree], follow_symlinks=False) == oracle_scan(tree)


def test_scan_is_deterministic(tree):
    assert scan_images([tree]) == scan_images([tree / "a", tree]) == sorted(scan_images([tree]))


# --------------------------------------------------------------------------- stat and hash


def test_content_hash_matches_hashlib(tmp_path):
    data = np.random.default_rng(3).integers(0, 256, 2_500_000, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = hashlib.blake2b(data, digest_size=16).hexdigest()
    assert content_hash(path) == content_hash(path, chunk=4096) == expected
    (tmp_path / "empty").write_bytes(b"")
    assert content_hash(tmp_path / "empty") == hashlib.blake2b(b"", digest_size=16).hexdigest()
    with pytest.raises(FileNotFoundError):  # plain OSError: callers such as pipeline catch it
        content_hash(tmp_path / "missing")


def test_stat_file(tmp_path):
    path = tmp_path / "f.jpg"
    path.write_bytes(b"12345")
    st = os.stat(path)
    assert stat_file(path) == FileStat(path=path, size=5, mtime_ns=st.st_mtime_ns)
    with pytest.raises(FileNotFoundError):
        stat_file(tmp_path / "missing.jpg")


# --------------------------------------------------------------------------- real data

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.shared
def test_real_sets_scan_and_decode():
    if not (SHARED / "dev").is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    for set_dir in sorted(p for p in (SHARED / "dev").iterdir() if p.is_dir()):
        files = scan_images([set_dir])
        assert files, set_dir
        for path in files[:: max(1, len(files) // 5)]:  # ~5 per set keeps this fast
            arr = load_array(path)
            assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8
            if opened(path)[0] == "L":
                assert (arr == arr[..., :1]).all()


def test_heic_and_avif_photos_load_whatever_their_name(tmp_path):
    """iPhones store HEIC; a HEIC renamed .jpg is common too."""
    import pillow_heif

    rgb = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    pillow_heif.register_heif_opener()
    Image.fromarray(rgb).save(tmp_path / "phone.heic", format="HEIF", quality=95)
    (tmp_path / "renamed.jpg").write_bytes((tmp_path / "phone.heic").read_bytes())
    Image.fromarray(rgb).save(tmp_path / "web.avif", quality=95)
    for name in ("phone.heic", "renamed.jpg", "web.avif"):
        img = load_array(tmp_path / name)
        assert img.shape == (48, 64, 3) and np.abs(img.astype(int) - rgb).mean() < 20, name
    assert {p.name for p in scan_images([tmp_path])} == {"phone.heic", "renamed.jpg", "web.avif"}


def test_unsupported_files_are_counted_not_ignored(tmp_path):
    from collections import Counter

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    for name in ("clip.mov", "raw.cr2", "raw2.CR2", "notes"):
        (tmp_path / name).write_bytes(b"x")
    unsupported = Counter()
    assert [p.name for p in scan_images([tmp_path], unsupported=unsupported)] == ["a.png"]
    assert unsupported == {".mov": 1, ".cr2": 2, "(none)": 1}
