"""``make demo``: build a sample collection, then run index → query → dedupe → people with the real CLI.

The sample comes from ``../shared/data/dev`` when it is there (real photos,
copied into the git-ignored ``demo_out/``), else from synthetic identities the
project draws itself. Either way it has planted copies (one byte-identical, two
re-encoded and resized, of two people's photos) and a multi-face group photo; one
photo per person is held back as the query.

Synthetic faces are no dedupe demo at dedupe's own τ (chosen on real faces): the
drawn photos of one person lie 0.16-0.30 apart, closer than that τ, so every
person would come out as one group of "copies" (issue 39). There the demo says
so and asks dedupe for :data:`SYNTHETIC_TAU`, which finds exactly the planted copies.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesearch.photos.load import load_image
from facesearch.photos.scan import scan_images
from facesearch.photos.synthetic import compose_photo, make_identity_folder

# Relative to where it runs (`make demo` runs in the checkout), so an installed package works too.
ROOT = Path.cwd()
SHARED = ROOT.parent / "shared" / "data" / "dev" / "pins_celebs"
OUT = ROOT / "demo_out"
# A re-encoded or resized copy of a synthetic photo lies within 0.09 of it, two drawn photos of one
# person 0.16 or more apart: a τ between the two finds the copies and nothing else.
SYNTHETIC_TAU = 0.1


@dataclass
class Sample:
    """The demo's collection: ``photos`` to index, ``queries`` held back, the ``copies`` planted
    (each group: the original first), and whether the faces are ``synthetic``."""

    photos: Path
    queries: list[Path]
    copies: list[list[Path]]
    synthetic: bool


def build_sample(out: Path, people: int = 6, per_person: int = 6, seed: int = 0, shared: Path = SHARED) -> Sample:
    """Write the sample collection under ``out/photos`` and the held-back queries under ``out/queries``."""
    shutil.rmtree(out, ignore_errors=True)
    photos, queries = out / "photos" / "people", out / "queries"
    synthetic = not shared.is_dir()
    source = make_identity_folder(out / "synthetic", people, per_person + 1, seed=seed) if synthetic else shared
    rng = np.random.default_rng(seed)
    persons = sorted(p for p in source.iterdir() if p.is_dir())[:people]
    for person in persons:
        files = scan_images([person])[: per_person + 1]
        (photos / person.name).mkdir(parents=True)
        queries.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[0], queries / f"{person.name}{files[0].suffix}")
        for f in files[1:]:
            shutil.copy(f, photos / person.name / f.name)
    inbox = out / "photos" / "inbox"  # unlabelled: a group photo and planted copies
    inbox.mkdir()
    copies = _plant_copies([photos / p.name for p in persons[:2]], inbox)
    _group_photo(photos, persons, inbox, rng)
    return Sample(out / "photos", sorted(queries.iterdir()), copies, synthetic)


def _plant_copies(person_dirs: list[Path], inbox: Path) -> list[list[Path]]:
    """A byte-identical and a smaller re-encoded copy of the first person's first photo, a smaller
    re-encoded copy of the second's: the groups of copies, each original first."""
    first, second = (sorted(d.iterdir())[0] for d in person_dirs)
    exact, smaller, other = inbox / f"exact_copy{first.suffix}", inbox / "resaved_smaller.jpg", inbox / "reencoded.jpg"
    shutil.copy(first, exact)
    _resave(first, smaller, scale=0.9, quality=80)
    _resave(second, other, scale=0.75, quality=85)
    return [[first, exact, smaller], [second, other]]


def _resave(src: Path, dest: Path, scale: float, quality: int) -> None:
    img = load_image(src)
    img.resize((int(img.width * scale), int(img.height * scale))).save(dest, quality=quality)


def _group_photo(photos: Path, persons: list[Path], inbox: Path, rng) -> None:
    faces = [load_image(sorted((photos / p.name).iterdir())[1]).resize((150, 150)) for p in persons[:3]]
    img, _ = compose_photo(faces, canvas_size=(640, 400), rng=rng)
    img.save(inbox / "three_people.jpg", quality=92)


def run(args: list[str]) -> None:
    print(f"\n$ facesearch {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "facesearch", *args], check=True)


def dedupe_args(index: str, sample: Sample) -> list[str]:
    """The demo's dedupe: dedupe's own τ on real photos, :data:`SYNTHETIC_TAU` on synthetic faces."""
    args = ["dedupe", "--index", index, "--scope", "photos"]
    return args + ["--tau", str(SYNTHETIC_TAU)] if sample.synthetic else args


def _say_copies(sample: Sample) -> None:
    print()
    for original, *copies in sample.copies:
        print(f"planted copies of {original.parent.name}/{original.name}: {', '.join(c.name for c in copies)}")
    if sample.synthetic:
        print(textwrap.fill("synthetic faces: the drawn photos of one person lie 0.16-0.30 apart, closer than "
                            "dedupe's τ (chosen on real faces), so it would call them all copies; the demo asks "
                            f"for τ {SYNTHETIC_TAU}", width=80))


def main() -> None:
    sample = build_sample(OUT)
    photos, queries, index = sample.photos, sample.queries, str(OUT / "index")
    src = "synthetic identities" if sample.synthetic else "real photos from ../shared/data/dev/pins_celebs"
    print(f"sample collection: {photos} ({src})")
    run(["index", str(photos / "people"), "--index", index, "--label-from-folder"])
    run(["index", str(photos / "inbox"), "--index", index])
    run(["query", str(photos / "inbox" / "three_people.jpg"), "--index", index, "--top", "3"])
    run(["query", *map(str, queries[:3]), "--index", index, "--top", "3"])
    _say_copies(sample)
    run(dedupe_args(index, sample))
    run(["people", "--index", index, "--html", str(OUT / "people.html")])  # the labels become named people
    run(["info", "--index", index])
    print(f"\nnext: facesearch serve --index {index}   (a web page at http://127.0.0.1:8750/)")


if __name__ == "__main__":
    main()
