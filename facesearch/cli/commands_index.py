"""Search-engine commands: index, query, dedupe and index maintenance."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from facesearch.cli import answers, output as out
from facesearch.cli.commands_labels import unplaced_report
from facesearch.cli.app import (DETECTOR, DEVICE, ENGINES, INDEX, INDEX_TYPES, JSON, QUIET, WEIGHTS, app,
                                 check_backend, check_engine, check_index_type, check_keep, check_policy,
                                 check_scope, check_tau)
from facesearch.cli.output import handle_errors
from facesearch.core.errors import FacesearchError
from facesearch.core.paths import resolve_index


@app.command("index")
@handle_errors
def index_cmd(
    paths: List[Path] = typer.Argument(..., help="Photo files or folders (scanned recursively)."),
    index: Optional[str] = INDEX, weights: Optional[str] = WEIGHTS, detector: str = DETECTOR,
    min_face: Optional[int] = typer.Option(None, "--min-face", min=1,
                                           help="Smallest face side in pixels. [default: 20 for yunet, 40 for dlib]"),
    policy: str = typer.Option("all", callback=check_policy, help="Faces per photo: all | largest."),
    batch_size: int = typer.Option(64, "--batch-size", min=1), device: str = DEVICE,
    label_from_folder: bool = typer.Option(False, "--label-from-folder", help="Label faces with their folder's name."),
    xmp: bool = typer.Option(True, "--xmp/--no-xmp", help="Read names from XMP face regions (MWG, Microsoft) in "
                                                         "the photo and its .xmp sidecars."),
    prune: bool = typer.Option(False, "--prune", help="Drop entries of files that no longer exist."),
    workers: Optional[int] = typer.Option(None, help="Detection worker processes (0: in-process). [default: one per core]"),
    index_type: str = typer.Option("auto", "--index-type", callback=check_index_type,
                                   help=" | ".join(INDEX_TYPES) + "."),
    backend: Optional[str] = typer.Option(None, "--backend", callback=check_backend,
                                          help="Vector store of a new index: faiss | milvus:// (embedded Milvus Lite in "
                                               "the index) | milvus://PATH.db | milvus://HOST:PORT. [default: faiss]"),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a report: sample photos with faces boxed, bad files."),
    engine: str = typer.Option("local", "--engine", callback=check_engine,
                               help=" | ".join(ENGINES) + ": this machine's process pool, or Ray Data stages."),
    address: Optional[str] = typer.Option(None, "--address",
                                          help="Ray cluster to join (auto, ray://HOST:10001). [default: start one here]"),
    video_every: float = typer.Option(0.5, "--video-every", min=0.05, max=10.0,
                                      help="Clips: seconds between sampled frames (keyframes are sampled too)."),
    video_min_face: Optional[int] = typer.Option(None, "--video-min-face", min=8,
                                                 help="Clips: smallest face side in pixels. [default: 1/18 of the "
                                                      "frame's short side, at least --min-face]"),
    json_out: bool = JSON, quiet: bool = QUIET, verbose: bool = answers.VERBOSE,
) -> None:
    """Find, align and embed every face under PATHS (photos and clips) into an index (incremental)."""
    from facesearch.indexing.run import IndexOptions
    from facesearch.people.labels import index_and_place

    if engine == "ray":
        _require_ray()
    opts = IndexOptions(paths=[str(p) for p in paths], index=resolve_index(index), weights=weights,
                        detector=detector, min_face=min_face, policy=policy, batch_size=batch_size,
                        device=device, label_from_folder=label_from_folder, prune=prune, workers=workers,
                        index_type=index_type, backend=backend, engine=engine, address=address, xmp=xmp,
                        video_every_s=video_every, video_min_face=video_min_face)
    with out.progress(quiet or json_out) as bar:
        task = bar.add_task("indexing", total=None, status="")

        def on_progress(event: str, data: dict) -> None:
            if event == "start":
                bar.update(task, total=data["todo"], status=f"{data['unchanged']} unchanged")
            elif event == "file":
                bar.update(task, completed=data["done"], status=f"{data['faces']} faces")

        summary = index_and_place(opts, on_progress).to_dict()
    if html:
        from facesearch.indexing.maintenance import sample_photos
        from facesearch.report import render_index_html

        render_index_html(summary, sample_photos(opts.index), html)
        summary["html"] = str(html)
        out.info(f"report: {html}", quiet)
    if json_out:
        out.emit_json(summary)
    else:
        answers.print_index(summary, verbose, quiet)
        _xmp_report(summary, quiet)
        unplaced_report(summary, quiet)
    if summary["failed"]:  # not the files' fault: say so with the exit code too
        out.fail(f"{summary['failed']} files failed for a reason other than the file itself",
                 "they were not recorded and are retried by the next `facesearch index`; FACESEARCH_DEBUG=1 shows why")


def _xmp_report(summary: dict, quiet: bool) -> None:
    """What the XMP face regions did, and every disagreement they brought: said, never settled silently."""
    if summary["xmp_regions"] or summary["xmp_failed"] or summary["xmp_conflicts"]:
        out.info(f"XMP regions: {summary['xmp_regions']} named, {summary['xmp_labelled']} faces labelled, "
                 f"{summary['xmp_added']} faces added from region boxes", quiet)
    if summary["xmp_conflicts"]:
        rows = [(c["path"], " vs ".join(c["names"]), c["resolution"]) for c in summary["xmp_conflicts"]]
        out.stdout().print(out.table("XMP name conflicts", ["path", "names", "what was done"], rows))
    if summary["xmp_failed"]:
        rows = [(f["path"], f["name"], f["error"]) for f in summary["xmp_failed"]]
        out.stdout().print(out.table("XMP regions not embedded", ["path", "name", "why"], rows))
    for w in summary["xmp_warnings"]:
        out.warn(w, quiet)


def _require_ray() -> None:
    """A missing optional extra is a usage error (exit 2), like an unknown option value."""
    from facesearch.indexing.ray_engine import require_ray

    try:
        require_ray()
    except FacesearchError as e:
        out.fail(e.message, e.hint, code=out.EXIT_USAGE)


@app.command("query")
@handle_errors
def query_cmd(
    images: List[Path] = typer.Argument(..., help="Photos to identify."),
    top: int = typer.Option(5, "--top", "-k", min=1, help="Matches per face."),
    tau: Optional[float] = typer.Option(None, "--tau", callback=check_tau,
                                        help="Distance threshold for identification, 0 < τ ≤ 2. [default: model's]"),
    index: Optional[str] = INDEX, weights: Optional[str] = WEIGHTS, detector: str = DETECTOR, device: str = DEVICE,
    html: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML report."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Write a PNG contact sheet."),
    quality_gate: bool = typer.Option(True, "--quality-gate/--no-quality-gate",
                                      help="Leave faces the model cannot read (dark, profile, blurred) unnamed."),
    json_out: bool = JSON, quiet: bool = QUIET, verbose: bool = answers.VERBOSE,
) -> None:
    """One-shot identification: the nearest indexed faces for every face in each photo."""
    from facesearch.search.query import QueryOptions, query

    answer = query([str(p) for p in images], QueryOptions(index=resolve_index(index), weights=weights, top=top,
                                                          tau=tau, detector=detector, device=device,
                                                          quality_gate=quality_gate))
    results = answer["results"]
    for w in answer["warnings"]:
        out.warn(w, quiet)
    _visuals(results, html, sheet, "query", quiet)
    if json_out:
        meta = {k: v for k, v in answer.items() if k != "results"}
        return out.emit_json({**results[0], **meta} if len(results) == 1 else answer)
    answers.print_query(answer, top, verbose, quiet)


@app.command("dedupe")
@handle_errors
def dedupe_cmd(
    tau: Optional[float] = typer.Option(None, "--tau", callback=check_tau,
                                        help="Distance threshold, 0 < τ ≤ 2. [default: model's]"),
    index: Optional[str] = INDEX,
    scope: str = typer.Option("faces", "--scope", callback=check_scope, help="faces | photos."),
    keep: str = typer.Option("largest", "--keep", callback=check_keep,
                             help="Suggested keeper: largest | sharpest | oldest."),
    out_csv: Optional[Path] = typer.Option(None, "--out", help="Write the groups as CSV."),
    move_to: Optional[Path] = typer.Option(None, "--move-to", help="Move non-keepers here (needs --yes)."),
    link: bool = typer.Option(False, "--link", help="Replace non-keepers by symlinks to the keeper (needs --yes)."),
    yes: bool = typer.Option(False, "--yes", help="Confirm actions that change files."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML report."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Write a PNG contact sheet."),
    json_out: bool = JSON, quiet: bool = QUIET,
) -> None:
    """Find duplicate faces or photos within distance τ (report only unless --yes)."""
    from facesearch.search.dedupe import SAME_AS_KEEPER, DedupeOptions, apply_actions, find_duplicates, write_csv

    folder = resolve_index(index)
    report = find_duplicates(DedupeOptions(index=folder, tau=tau, scope=scope, keep=keep))
    for w in report["warnings"]:  # before any file is touched
        out.warn(w, quiet)
    if move_to or link:
        report["applied"] = apply_actions(report, folder, str(move_to) if move_to else None, link, yes)
        out.info(out.plain(f"{report['applied']['moved']} files {'linked' if link else 'moved'}; journal "
                      f"{report['applied']['journal']} (undo: facesearch undo --index {folder})"), quiet)
        aliases = sum(a.get("skipped") == SAME_AS_KEEPER for a in report["applied"]["actions"])
        if aliases:
            out.warn(f"{aliases} left alone: the same file as their keeper under another path", quiet)
    if out_csv:
        write_csv(report, out_csv)
    _visuals(report, html, sheet, "dedupe", quiet)
    if json_out:
        return out.emit_json(report)
    answers.print_dedupe(report, scope)


@app.command("undo")
@handle_errors
def undo_cmd(
    journal: Optional[Path] = typer.Argument(None, help="A dedupe or write-xmp journal. [default: the index's newest]"),
    index: Optional[str] = INDEX, json_out: bool = JSON, quiet: bool = QUIET,
) -> None:
    """Put back every file a dedupe run moved or linked, or a write-xmp run wrote (also after a crash or a full disk)."""
    from facesearch.search.dedupe import undo

    result = undo(resolve_index(index), journal)
    if json_out:
        return out.emit_json(result)
    out.stdout().print(out.plain(f"undid {result['op']}: restored {result['restored']} files from {result['journal']}"
                            + (f", cleaned {result['cleaned']} partial copies" if result.get("cleaned") else "")))
    for c in result.get("conflicts", []):
        out.warn(f"left alone: {c}", quiet)
    out.info(out.plain(result["hint"]), quiet)


@app.command("info")
@handle_errors
def info_cmd(index: Optional[str] = INDEX, json_out: bool = JSON) -> None:
    """Model, counts, index type, size on disk and last run."""
    from facesearch.indexing.maintenance import info

    data = info(resolve_index(index))
    if json_out:
        return out.emit_json(data)
    flat = [(k, v) for k, v in data.items() if not isinstance(v, (dict, list))]
    flat += [(f"manifest.{k}", v) for k, v in data["manifest"].items() if not isinstance(v, (dict, list))]
    out.stdout().print(out.table(f"index {data['index']}", ["", "value"], flat))


app.command("stats", help="Alias of info.")(info_cmd)


@app.command("remove")
@handle_errors
def remove_cmd(paths: List[Path] = typer.Argument(...), index: Optional[str] = INDEX, json_out: bool = JSON) -> None:
    """Delete the entries of PATHS from the index (files stay on disk)."""
    from facesearch.indexing.maintenance import remove

    _report(remove(resolve_index(index), [str(p) for p in paths]), json_out)


@app.command("rebuild")
@handle_errors
def rebuild_cmd(index: Optional[str] = INDEX, weights: Optional[str] = WEIGHTS,
                index_type: Optional[str] = typer.Option(None, "--index-type", callback=check_index_type,
                                                         help=" | ".join(INDEX_TYPES) + "."),
                detector: str = DETECTOR,
                json_out: bool = JSON) -> None:
    """Re-embed with new weights, or rebuild the FAISS index type; the old index stays usable until done."""
    from facesearch.indexing.maintenance import rebuild

    kw = {"detector": detector} if weights else {}
    _report(rebuild(resolve_index(index), weights=weights, index_type=index_type, **kw), json_out)


@app.command("verify")
@handle_errors
def verify_cmd(index: Optional[str] = INDEX, fix: bool = typer.Option(False, "--fix"), json_out: bool = JSON) -> None:
    """Check FAISS against SQLite against the files on disk."""
    from facesearch.indexing.maintenance import verify
    from facesearch.people.labels import fix_names

    report = verify(resolve_index(index), fix=fix)
    if fix:
        report["names"] = fix_names(resolve_index(index))
    _report(report, json_out)
    if report.get("files_missing"):
        out.info("hint: files that are gone leave the index with `facesearch index FOLDER --prune`", json_out)
    if not report.get("ok", False) and not fix:
        raise typer.Exit(1)


@app.command("export")
@handle_errors
def export_cmd(dest: str = typer.Argument(..., help="OUT.npz or OUT.parquet"), index: Optional[str] = INDEX,
               json_out: bool = JSON) -> None:
    """Write all embeddings with paths, boxes and labels (one row per face, stable order)."""
    from facesearch.indexing.maintenance import export

    _report(export(resolve_index(index), dest), json_out)


def _visuals(data, html: Optional[Path], sheet: Optional[Path], kind: str, quiet: bool = False) -> None:
    """Write the HTML report and/or PNG sheet for query results or a dedupe report."""
    from facesearch import report

    if html:
        getattr(report, f"render_{kind}_html")(data, html)
        out.info(f"report: {html}", quiet)
    if sheet:
        getattr(report, f"{kind}_sheet")(data, sheet)
        out.info(f"sheet: {sheet}", quiet)


@app.command("doctor")
@handle_errors
def doctor_cmd(index: Optional[str] = INDEX, weights: Optional[str] = WEIGHTS, json_out: bool = JSON) -> None:
    """Check the installation: Python, torch, CUDA, FAISS, detectors, weights and the index."""
    from facesearch.install.doctor import run_doctor

    result = run_doctor(resolve_index(index), weights)
    if json_out:
        out.emit_json(result)
    else:
        # The hint under its detail, not in a column of its own: at 80 columns the detail's paths need the room.
        rows = [("ok" if c["ok"] else ("FAIL" if c.get("required", True) else "warn"), c["name"],
                 out.Fitted(c["detail"] + (f"\nhint: {c['hint']}" if c.get("hint") else ""))) for c in result["checks"]]
        out.stdout().print(out.table(f"facesearch doctor: {result['summary']}", ["", "check", "detail"], rows,
                                     compact=True))
    if not result["ok"]:
        raise typer.Exit(1)


def _report(data: dict, json_out: bool) -> None:
    if json_out:
        return out.emit_json(data)
    out.stdout().print(out.table(None, ["", "value"], [(k, v) for k, v in data.items()]))


@app.command("serve")
@handle_errors
def serve_cmd(
    index: Optional[str] = INDEX, weights: Optional[str] = WEIGHTS, detector: str = DETECTOR, device: str = DEVICE,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (others than loopback need --token)."),
    port: int = typer.Option(8750, "--port", min=1, max=65535),
    token: Optional[str] = typer.Option(None, "--token", envvar="FACESEARCH_TOKEN",
                                        help="Every /api request must carry it (Authorization: Bearer TOKEN)."),
    allow_host: Optional[List[str]] = typer.Option(
        None, "--allow-host", help="Another Host name to answer to (a LAN name); repeatable. Default: loopback "
                                   "names and --host."),
    allow_index_root: Optional[List[Path]] = typer.Option(
        None, "--allow-index-root", help="A folder POST /api/index may read; repeatable. Default: none "
                                         "(uploaded photos only)."),
    allow_move_root: Optional[List[Path]] = typer.Option(
        None, "--allow-move-root", help="A folder the page may move duplicate photos into (under it); repeatable. "
                                        "Default: none (the page cannot move files)."),
    watch: Optional[List[Path]] = typer.Option(
        None, "--watch", help="A photo folder to keep indexed while serving (as `facesearch watch`); repeatable."),
    quiet: bool = QUIET,
) -> None:
    """Serve the index: an HTTP API (query, people, dedupe, index jobs) and a web page at /."""
    from facesearch.service.app import check_bind

    try:
        check_bind(host, token)
    except FacesearchError as e:
        out.fail(e.message, e.hint, code=2)
    import uvicorn

    from facesearch.service.app import create_app
    from facesearch.service.logs import log_config
    from facesearch.service.state import ServeOptions

    opts = ServeOptions(index=resolve_index(index), weights=weights, detector=detector, device=device, token=token,
                        host=host, allow_hosts=tuple(allow_host or ()), index_roots=tuple(allow_index_root or ()),
                        move_roots=tuple(allow_move_root or ()))
    missing = [str(p) for p in watch or [] if not p.is_dir()]
    if missing:
        out.fail(f"not a folder: {', '.join(missing)}", "--watch takes photo folders", code=out.EXIT_USAGE)
    app_ = create_app(opts)
    watcher = _start_watcher(opts, watch or [], quiet)
    out.info(f"serving {opts.index} on http://{host}:{port}/ (Ctrl-C stops)", quiet)
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning" if quiet else "info",
                    log_config=log_config())  # the access log without ?token= values
    finally:
        if watcher is not None:
            watcher.stop()


def _start_watcher(opts, folders: list[Path], quiet: bool):
    """``serve --watch``: the watcher thread, or None without folders."""
    if not folders:
        return None
    from facesearch.service.watcher import Watcher

    out.info(f"watching {', '.join(map(str, folders))}", quiet)
    return Watcher(opts, folders).start()
