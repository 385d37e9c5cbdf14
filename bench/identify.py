"""One-shot identification through the real CLI on a labelled photo set.

Holds back the first photo of each person, indexes the rest with
``facesearch index --label-from-folder`` (once with ``--detector none``, once
with the real detector), then runs ``facesearch query`` on the held-back
photos and reports top-1 identification accuracy (the nearest labelled person
== folder), the share the open-set answer names rightly (within τ), the probes
it names wrongly, and indexing files/s. Default set: ``../shared/data/dev/pins_celebs``.

    python bench/identify.py [--data DIR] [--detectors none,auto] [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

DEFAULT_DATA = C.REPO.parent / "shared" / "data" / "dev" / "pins_celebs"


def split_holdout(data: Path, work: Path, per_person: int | None) -> tuple[Path, list[tuple[str, str]]]:
    """Symlink all but the first photo of each person into ``work/gallery``; return the probes."""
    gallery, probes = work / "gallery", []
    for person in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.is_file())
        if len(files) < 2:
            continue
        probes.append((str(files[0]), person.name))
        (gallery / person.name).mkdir(parents=True)
        for f in files[1 : None if per_person is None else per_person + 1]:
            (gallery / person.name / f.name).symlink_to(f)
    return gallery, probes


def cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "facesearch", *args, "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def run_detector(detector: str, gallery: Path, probes: list[tuple[str, str]], work: Path) -> dict:
    index = work / f"index-{detector}"
    t0 = time.perf_counter()
    summary = cli("index", str(gallery), "--index", str(index), "--detector", detector, "--label-from-folder", "-q")
    seconds = time.perf_counter() - t0
    answer = cli("query", *[p for p, _ in probes], "--index", str(index), "--detector", detector, "--top", "1")
    results = answer["results"] if "results" in answer else [answer]  # one probe: its result, flattened
    firsts = [r["faces"][0] if r.get("faces") else {} for r in results]
    # top1: the nearest labelled person (closed set); named: the open-set answer within τ.
    top1 = sum(f.get("candidate") == person for f, (_, person) in zip(firsts, probes))
    named = [f.get("identity") for f in firsts]
    return {"detector": detector, "photos": summary["scanned"], "faces": summary["faces"],
            "noface": summary["noface"], "index_seconds": round(seconds, 2),
            "files_per_s": round(summary["scanned"] / seconds, 2), "probes": len(probes),
            "top1": round(top1 / len(probes), 4),
            "named_right": round(sum(n == person for n, (_, person) in zip(named, probes)) / len(probes), 4),
            "named_wrong": sum(n is not None and n != person for n, (_, person) in zip(named, probes))}


def main(argv: list[str] | None = None) -> dict:
    ap = C.parser("identify", __doc__, [0], [0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--detectors", default="none,auto")
    args = C.parse(ap, argv)
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent")
        return {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gallery, probes = split_holdout(args.data, Path(tmp), 5 if args.quick else None)
        for det in args.detectors.split(","):
            rows.append(run_detector(det, gallery, probes, Path(tmp)))
    result = {"machine": C.machine(), "data": str(args.data), "rows": rows}
    C.print_table("one-shot identification (held-out first photo per person)",
                  list(rows[0]), [list(r.values()) for r in rows])
    C.write_results(args.out, result)
    return result


if __name__ == "__main__":
    main()
