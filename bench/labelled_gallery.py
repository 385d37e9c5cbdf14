"""Labelled gallery of group photos: is the folder's name given to its person, or to everyone in the photo?

A gallery is built the way users build one: a folder per person, ``index --label-from-folder``. Here
each person's folder holds group photos composed in code (``facesearch.photos.synthetic.group_photo``)
from ``dev/pins_celebs`` crops: the person beside 1-2 *bystanders*, drawn from a disjoint pool of
other dev people who have no folder. Held-out crops (never in a gallery photo) are then queried:

- a bystander's crop should stay unnamed: ``strangers named`` (bad) is the share named anyone;
- a named person's crop should be named so: ``people found`` (good), ``wrong name`` (bad).

Side by side, on one index (embedded once): **main** (before issue 36: every face of a labelled photo
took its name; reproduced by copying each file's label onto all its faces, which is what main's
``COALESCE(face.label, file.label)`` made ``query`` see) and **placed** (this code: the name on
the one face that agrees with the name's other photos, else on none).

    python bench/labelled_gallery.py                    # 8 people x 6 photos x 3 seeds, ~30 s on 2 cores
    python bench/labelled_gallery.py --people 4 --photos 3 --seeds 0

Prints a table and writes ``bench/results/labelled_gallery.json``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev" / "pins_celebs"
HELD_OUT = 3  # crops per person kept out of the gallery, queried afterwards


def split_people(data: Path, n_people: int, seed: int) -> tuple[list[str], list[str]]:
    """Named people and the disjoint bystander pool (everyone else), seeded."""
    people = sorted(p.name for p in data.iterdir() if p.is_dir())
    random.Random(seed).shuffle(people)
    return sorted(people[:n_people]), sorted(people[n_people:])


def build_gallery(data: Path, out: Path, named: list[str], bystanders: list[str], per_person: int,
                  seed: int = 0) -> dict:
    """Folders ``out/<person>/gNN.jpg`` of group photos; returns ``{"photos": {path: [(who, box)]},
    "probes": {person: [held-out crop paths]}}`` (boxes in the photo, in left-to-right order)."""
    rng, r = np.random.default_rng(seed), random.Random(seed)
    crops = {p: sorted((data / p).iterdir()) for p in named + bystanders}
    for p in crops:
        r.shuffle(crops[p])
    probes = {p: crops[p][:HELD_OUT] for p in crops}
    pool = {p: crops[p][HELD_OUT:] for p in crops}
    photos = {}
    for person in named:
        (out / person).mkdir(parents=True, exist_ok=True)
        for k in range(per_person):
            who = [person] + r.sample(bystanders, r.choice([1, 2]))
            r.shuffle(who)
            img, boxes = _group(who, pool, r, rng)
            path = out / person / f"g{k:02d}.jpg"
            img.save(path, quality=92)
            photos[str(path)] = sorted(zip(who, boxes), key=lambda wb: wb[1][0])
    return {"photos": photos, "probes": {p: [str(c) for c in v] for p, v in probes.items()}}


def _group(who: list[str], pool: dict, r: random.Random, rng) -> tuple[Image.Image, list]:
    from facesearch.photos.synthetic import group_photo

    with_crops = [Image.open(r.choice(pool[w])) for w in who]
    return group_photo(with_crops, rng)


def face_truth(index: Path, photos: dict) -> list[tuple[int, str | None, str]]:
    """``(face_id, who, label)`` of every stored face: who is the pasted person whose box holds its centre."""
    db = sqlite3.connect(index / "meta.sqlite")
    rows = db.execute("SELECT fa.id, fi.path, fa.x1, fa.y1, fa.x2, fa.y2, fa.label FROM faces fa "
                      "JOIN files fi ON fi.id = fa.file_id").fetchall()
    db.close()
    out = []
    for fid, path, x1, y1, x2, y2, label in rows:
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        who = [w for w, b in photos[path] if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]]
        out.append((fid, who[0] if who else None, label))
    return out


def label_every_face(index: Path) -> None:
    """main's rule, reproduced: each face of a labelled file carries the file's label."""
    db = sqlite3.connect(index / "meta.sqlite")
    with db:
        db.execute("UPDATE faces SET label = (SELECT label FROM files WHERE files.id = faces.file_id) "
                   "WHERE (SELECT label FROM files WHERE files.id = faces.file_id) IS NOT NULL")
    db.close()


def identify(index: Path, probes: dict[str, list[str]]) -> dict[str, list[str | None]]:
    """Each probe crop's answer: the name ``query`` gives its largest face (None: no one)."""
    from facesearch.search.query import Searcher

    s = Searcher(index)
    flat = [(p, c) for p, cs in probes.items() for c in cs]
    res = s.search([c for _, c in flat])["results"]
    out: dict[str, list] = {p: [] for p in probes}
    for (p, _), r in zip(flat, res):
        faces = sorted(r["faces"], key=lambda f: -(f["box"][2] - f["box"][0]))
        out[p].append(faces[0].get("identity") if faces else None)
    return out


def score(rule: str, faces: list, answers: dict, named: list[str], bystanders: list[str]) -> dict:
    """One row: gallery faces named right / wrong / bystanders named, and the probes' outcome."""
    labelled = [(who, lab) for _, who, lab in faces if lab is not None]
    strangers = [a for p in bystanders for a in answers[p]]
    mates = [(p, a) for p in named for a in answers[p]]
    return {"rule": rule, "faces": len(faces), "named_faces": len(labelled),
            "named_right": sum(w == lab for w, lab in labelled),
            "bystanders_named": sum(w in bystanders for w, _ in labelled),
            "strangers_named": round(sum(a is not None for a in strangers) / max(len(strangers), 1), 3),
            "people_found": round(sum(a == p for p, a in mates) / max(len(mates), 1), 3),
            "wrong_name": round(sum(a is not None and a != p for p, a in mates) / max(len(mates), 1), 3)}


def run(args, seed: int) -> dict:
    """One seeded gallery, indexed once, scored under both rules."""
    from facesearch.indexing.run import IndexOptions
    from facesearch.people.labels import index_and_place

    named, bystanders = split_people(args.data, args.people, seed)
    with tempfile.TemporaryDirectory(prefix="labelled_gallery_") as tmp:
        tmp = Path(tmp)
        g = build_gallery(args.data, tmp / "gallery", named, bystanders, args.photos, seed)
        with C.timer() as t:
            s = index_and_place(IndexOptions(paths=[str(tmp / "gallery")], index=tmp / "placed",
                                             label_from_folder=True, workers=0))
        shutil.copytree(tmp / "placed", tmp / "main")
        label_every_face(tmp / "main")
        rows = []
        for rule in ("main", "placed"):
            faces = face_truth(tmp / rule, g["photos"])
            rows.append({"seed": seed, **score(rule, faces, identify(tmp / rule, g["probes"]), named, bystanders),
                         "unplaced": len(s.unplaced) if rule == "placed" else None})
    return {"people": named, "bystanders": bystanders, "photos": len(g["photos"]), "seed": seed,
            "index_seconds": round(t["s"], 1), "rows": rows}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--people", type=int, default=8, help="named people (the rest of pins_celebs are bystanders)")
    ap.add_argument("--photos", type=int, default=6, help="group photos per named person")
    ap.add_argument("--seeds", default="0,1,2", help="one gallery per seed (people, bystanders, photos drawn anew)")
    ap.add_argument("--out", type=Path, default=C.RESULTS / "labelled_gallery.json")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    runs = [run(args, int(seed)) for seed in args.seeds.split(",")]
    rows = [r for one in runs for r in one["rows"]]
    cols = ["seed", "rule", "faces", "named_faces", "named_right", "bystanders_named", "unplaced", "strangers_named",
            "people_found", "wrong_name"]
    C.print_table(f"labelled gallery: {args.people} people x {args.photos} group photos per seed", cols,
                  [[r[c] for c in cols] for r in rows])
    C.write_results(args.out, {"people": args.people, "photos": args.photos, "runs": runs, "machine": C.machine()})


if __name__ == "__main__":
    main()
