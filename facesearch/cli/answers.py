"""The human output of ``index`` and ``query``: short, in words, and readable in an 80-column terminal.

``index`` prints one summary line (its counter table under ``--verbose``); ``query`` prints, per face,
the answer in words (:mod:`facesearch.search.verdict`) and its matches as a narrow table with paths
relative to the current folder (or, for photos elsewhere, to the folder that holds them all). The query
photo itself is never listed as its own match. Distances, τ, FAR and boxes show under ``--verbose``.
``--json`` is not printed here and never changes.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from facesearch.cli import output as out
from facesearch.search.moments import span

VERBOSE = typer.Option(False, "--verbose", "-v", help="Also the raw numbers: distances, τ, FAR, boxes, counters.")
INDEX_COUNTERS = ("scanned", "new", "updated", "unchanged", "bad", "noface", "failed", "faces", "pruned", "seconds",
                  "files_per_s")


# --- index ------------------------------------------------------------------------------------


def index_line(s: dict) -> str:
    """``36 photos, 36 faces in 5.5 s (6.6 photos/s); 0 bad, 0 without a face`` (+ what else happened)."""
    line = (f"{s['scanned']} photos, {s['faces']} faces in {s['seconds']:.1f} s ({s['files_per_s']:.1f} photos/s); "
            f"{s['bad']} bad, {s['noface']} without a face")
    extra = [f"{s[k]} {word}" for k, word in (("clips", "clips among them"), ("unchanged", "unchanged"),
                                               ("pruned", "pruned"), ("failed", "failed")) if s.get(k)]
    if s.get("moved"):
        extra.append(f"{len(s['moved'])} moved (faces and names kept)")
    if s.get("same_file"):
        extra.append(f"{len(s['same_file'])} same file as another path (skipped)")
    return line + (f"; {', '.join(extra)}" if extra else "")


def print_index(summary: dict, verbose: bool, quiet: bool) -> None:
    """The summary line on stdout; with ``verbose`` the counters (non-zero ones) and the bad files' table."""
    con = out.stdout()
    con.print(out.plain(index_line(summary)))
    if verbose:
        rows = [(k, _count(summary[k])) for k in INDEX_COUNTERS if summary[k]]
        con.print(out.table(f"index {summary['index']}", ["", "count"], rows))
    if summary["unsupported"]:
        out.info(out.plain("not read (no decoder for these kinds of file): "
                           + ", ".join(f"{ext} {n}" for ext, n in summary["unsupported"].items())), quiet)
    for key, title in (("bad_files", "bad files (skipped)"), ("failed_files", "failed (retried next run)")):
        if summary[key]:
            rel = Relative([b["path"] for b in summary[key]])
            con.print(out.Fitted([title + rel.note()]))
            con.print(out.table(None, ["photo", "error"], [(rel(b["path"]), b["error"]) for b in summary[key]],
                                paths=["photo"]))
    if verbose and summary.get("same_file"):
        con.print(out.table("same file as another path (skipped)", ["path", "same file as"],
                            [(a["path"], a["same_as"]) for a in summary["same_file"]], paths=["path", "same file as"]))


def _count(v) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


# --- query ------------------------------------------------------------------------------------


class Relative:
    """Paths as the user reads them: relative to the current folder when all are under it, else to
    the deepest folder holding them all (``note()`` names it)."""

    def __init__(self, paths: list[str]):
        absolute = [os.path.abspath(p) for p in paths]
        cwd = os.getcwd()
        if not absolute or all(_under(p, cwd) for p in absolute):
            self.root, self.named = cwd, False
        else:
            self.root, self.named = os.path.commonpath([os.path.dirname(p) for p in absolute]), True

    def __call__(self, path: str) -> str:
        rel = os.path.relpath(os.path.abspath(path), self.root)
        return path if rel.startswith("..") else rel

    def note(self) -> str:
        return f" (under {self.root})" if self.named and self.root != os.sep else ""


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def print_query(answer: dict, top: int, verbose: bool, quiet: bool) -> None:
    """Every face of every photo: its answer in words, then its matches (the raw numbers with ``verbose``)."""
    if verbose:
        out.info(out.plain(f"τ {answer['tau']:.3f}: {answer['tau_source']}"), quiet)
    con = out.stdout()
    for r in answer["results"]:
        if r.get("error"):
            out.warn(f"skipped {r['query']}: {r['error']}", quiet)
        for n, f in enumerate(r["faces"], 1):
            matches = f["matches"][:top]  # the query photo is not among them (facesearch.search.own)
            rel = Relative([m["path"] for m in matches])
            words = f"face {n} of {len(r['faces'])}: {f['verdict_text']}".split(" ")
            con.print(out.Fitted([f"{Path(r['query']).name},", *words]))  # the name is one piece: never broken
            con.print(out.plain(f"  {f['error_rate']}"), style="dim")
            if verbose:
                con.print(out.plain("  " + _numbers(f)), style="dim")
            if rel.named:  # the folder they share, once above the table
                con.print(out.Fitted([f"  photos{rel.note()}"]))
            con.print(_matches_table(matches, rel, verbose))
            same = [rel(p) for p in f["same_person"] if p in {m["path"] for m in matches}]
            if not f["identity"] and same:
                con.print(out.Fitted(["  same person as:", *[f"{p}," for p in same[:-1]], same[-1]]))


def _numbers(f: dict) -> str:
    """The raw figures behind a verdict: distance to the nearest named face, FAR, margin, quality, box."""
    far = "—" if f["far"] is None else f"{'≤' if f['far_is_bound'] else ''}{f['far']:.0e}"
    d = "—" if f["distance"] is None else f"{f['distance']:.3f}"
    margin = "—" if f["margin"] is None else f"{f['margin']:.3f}"
    q = "" if f.get("quality") is None else f", quality {f['quality']:.1f}"
    box = ",".join(f"{v:.0f}" for v in f["box"])
    return f"d {d} to {f['candidate'] or 'nobody named'}, FAR {far}, margin {margin}{q}, box {box}"


def _matches_table(matches: list[dict], rel: Relative, verbose: bool):
    cols = ["#", "photo", "name", "same person?"] + (["distance", "cosine"] if verbose else [])
    rows = []
    for k, m in enumerate(matches, 1):
        row = [k, f"{rel(m['path'])} {span(m)}".rstrip(), m["label"], m.get("verdict") or "no"]
        rows.append(row + ([f"{m['distance']:.3f}", f"{m['similarity']:.3f}"] if verbose else []))
    return out.table(None, cols, rows, compact=True, paths=["photo"])


# --- dedupe -------------------------------------------------------------------------------------


def print_dedupe(report: dict, scope: str) -> None:
    """The groups as tables of paths relative to the folder they share (named once, above them)."""
    con = out.stdout()
    con.print(out.plain(f"{report['n_groups']} groups, {report['n_members']} {scope}, τ = {report['tau']:.3f} "
                        f"({report['tau_source']})"))
    rel = Relative([m["path"] for g in report["groups"] for m in g["members"]]
                   + [p for e in report["exact_duplicates"] for p in e])
    if rel.named:
        con.print(out.Fitted([f"paths{rel.note()}"]))
    where = "box" if scope == "faces" else "n_faces"  # a photo group's members have no one box
    for n, g in enumerate(report["groups"]):
        rows = [(rel(m["path"]), m.get(where), f"keep ({g['keeper_reason']})" if m["path"] == g["keeper"] else "")
                for m in g["members"]]
        con.print(out.table(f"group {n + 1}: max d {g['max_distance']}, mean d {g['mean_distance']}",
                            ["path", where.replace("n_", ""), ""], rows, paths=["path"]))
    for e in report["exact_duplicates"]:
        con.print(out.Fitted(["exact duplicates:", *[f"{rel(p)}," for p in e[:-1]], rel(e[-1])]))
