"""``make demo``: build a sample collection, then run index → query → dedupe → people with the real CLI.

The sample comes from ``../shared/data/dev`` when it is there (real photos,
copied into the git-ignored ``demo_out/``), else from synthetic identities the
project draws itself. Either way it has a planted duplicate (byte-identical),
a near-duplicate (re-encoded and resized) and a multi-face group photo; one
photo per person is held back as the query.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from facesearch.photos.load import load_image
from facesearch.photos.scan import scan_images
from facesearch.photos.synthetic import compose_photo, make_identity_folder

# Relative to where it runs (`make demo` runs in the checkout), so an installed package works too.
ROOT = Path.cwd()
SHARED = ROOT.parent / "shared" / "data" / "dev" / "pins_celebs"
OUT = ROOT / "demo_out"


def build_sample(out: Path, people: int = 6, per_person: int = 6, seed: int = 0) -> tuple[Path, list[Path]]:
    """Write the sample collection under ``out/photos`` and the held-back queries under ``out/queries``."""
    shutil.rmtree(out, ignore_errors=True)
    photos, queries = out / "photos" / "people", out / "queries"
    source = SHARED if SHARED.is_dir() else make_identity_folder(out / "synthetic", people, per_person + 1, seed=seed)
    rng = np.random.default_rng(seed)
    persons = sorted(p for p in source.iterdir() if p.is_dir())[:people]
    for person in persons:
        files = scan_images([person])[: per_person + 1]
        (photos / person.name).mkdir(parents=True)
        queries.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[0], queries / f"{person.name}{files[0].suffix}")
        for f in files[1:]:
            shutil.copy(f, photos / person.name / f.name)
    inbox = out / "photos" / "inbox"  # unlabelled: a group photo and planted duplicates
    inbox.mkdir()
    _plant_duplicates(photos / persons[0].name, inbox)
    _group_photo(photos, persons, inbox, rng)
    return out / "photos", sorted(queries.iterdir())


def _plant_duplicates(person_dir: Path, inbox: Path) -> None:
    first = sorted(person_dir.iterdir())[0]
    shutil.copy(first, inbox / f"exact_copy{first.suffix}")  # byte-identical
    img = load_image(first)
    img.resize((int(img.width * 0.9), int(img.height * 0.9))).save(inbox / "resaved_smaller.jpg", quality=80)


def _group_photo(photos: Path, persons: list[Path], inbox: Path, rng) -> None:
    faces = [load_image(sorted((photos / p.name).iterdir())[1]).resize((150, 150)) for p in persons[:3]]
    img, _ = compose_photo(faces, canvas_size=(640, 400), rng=rng)
    img.save(inbox / "three_people.jpg", quality=92)


def run(args: list[str]) -> None:
    print(f"\n$ facesearch {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "facesearch", *args], check=True)


def main() -> None:
    photos, queries = build_sample(OUT)
    index = str(OUT / "index")
    src = "real photos from ../shared/data/dev/pins_celebs" if SHARED.is_dir() else "synthetic identities"
    print(f"sample collection: {photos} ({src})")
    run(["index", str(photos / "people"), "--index", index, "--label-from-folder"])
    run(["index", str(photos / "inbox"), "--index", index])
    run(["query", str(photos / "inbox" / "three_people.jpg"), "--index", index, "--top", "3"])
    run(["query", *map(str, queries[:3]), "--index", index, "--top", "3"])
    run(["dedupe", "--index", index, "--scope", "photos"])
    run(["people", "--index", index, "--html", str(OUT / "people.html")])  # the labels become named people
    run(["info", "--index", index])
    print(f"\nnext: facesearch serve --index {index}   (a web page at http://127.0.0.1:8750/)")


if __name__ == "__main__":
    main()
