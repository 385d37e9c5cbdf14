"""Learning commands: train and evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from facesearch.cli import output as out
from facesearch.cli.app import DETECTOR, DEVICE, JSON, QUIET, WEIGHTS, app, check_detector, check_loss, check_tau
from facesearch.cli.output import handle_errors
from facesearch.core.extras import require

REPORT_KEYS = ["n_genuine", "n_impostor", "roc_auc", "eer", "tau_eer", "tar@far1e-2", "tar@far1e-3",
               "tau", "accuracy", "precision", "recall", "f1", "balanced_accuracy", "cv_accuracy"]


@app.command("train")
@handle_errors
def train_cmd(
    data: List[Path] = typer.Argument(..., help="Identity folders: DATA/<person>/<image> (several allowed)."),
    backbone: str = typer.Option("mobilenetv3_small_100", help="Any timm model name."),
    loss: str = typer.Option("contrastive", callback=check_loss, help="contrastive | triplet | bce."),
    margin: Optional[float] = typer.Option(None, help="Loss margin. [default: 1.0 contrastive, 0.2 triplet]"),
    epochs: int = typer.Option(20, min=1), batch_size: int = typer.Option(32, "--batch-size", min=2),
    lr: float = typer.Option(1e-3), embedding_dim: int = typer.Option(128, "--dim", min=2),
    input_size: int = typer.Option(112, "--input-size", min=16),
    out_path: Path = typer.Option(Path("weights/model"), "--out", help="Weights stem: writes STEM.safetensors + STEM.json."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last epoch."),
    seed: int = typer.Option(0, help="Seed; runs are repeatable on CPU."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.05, max=0.9),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", help="Cap batches per epoch."),
    init: Optional[str] = typer.Option(None, "--init", help="Start from these weights (fine-tuning)."),
    detector: str = typer.Option("none", "--detector", callback=check_detector,
                                 help="none: images are face crops; auto etc.: detect and align each face as "
                                 "indexing does."),
    device: str = DEVICE, json_out: bool = JSON, quiet: bool = QUIET,
) -> None:
    """Train a Siamese face embedder on identity folders; keeps the best epoch by validation AUC."""
    from facesearch.learn.trainer import TrainOptions, train

    opts = TrainOptions(data=[str(d) for d in data], backbone=backbone, loss=loss, margin=margin, epochs=epochs,
                        batch_size=batch_size, lr=lr, embedding_dim=embedding_dim, input_size=input_size,
                        out=str(out_path), resume=resume, seed=seed, val_fraction=val_fraction,
                        steps_per_epoch=steps_per_epoch, device=device, init=init, detector=detector)
    with out.progress(quiet or json_out) as bar:
        tasks: dict[int, int] = {}

        def on_event(event: str, d: dict) -> None:
            if event == "epoch_start":
                tasks[d["epoch"]] = bar.add_task(f"epoch {d['epoch']}/{d['epochs']}", total=d["steps"], status="")
            elif event == "step":
                bar.update(tasks[d["epoch"]], completed=d["step"], status=f"loss {d['loss']:.4f}")
            elif event == "epoch_end":
                bar.update(tasks[d["epoch"]], status=f"loss {d['loss']:.4f} · val AUC {d['val_auc']:.4f} · "
                           f"τ {d['val_tau']:.3f}{' · best' if d['best'] else ''}")

        summary = train(opts, on_event)
    if json_out:
        return out.emit_json(summary)
    rows = [(e["epoch"], e["loss"], e["val_auc"], e["val_tau"], "★" if e["best"] else "") for e in summary["history"]]
    out.stdout().print(out.table(f"trained {summary['weights']}", ["epoch", "loss", "val AUC", "τ", "best"], rows))


@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    data: List[Path] = typer.Argument(..., help="Identity folders DATA/<person>/<image>."),
    weights: Optional[str] = WEIGHTS,
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Pairs file: 'path1 path2 same(0/1)' per line."),
    tau: Optional[float] = typer.Option(None, "--tau", callback=check_tau,
                                        help="Distance threshold, 0 < τ ≤ 2. [default: cross-validated]"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a ROC curve PNG."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a report: ROC, DET, histograms, hardest mistakes."),
    detector: str = DETECTOR, device: str = DEVICE,
    max_impostors: int = typer.Option(50_000, "--max-impostors", help="Seeded sample of impostor pairs."),
    seed: int = typer.Option(0), json_out: bool = JSON, quiet: bool = QUIET,
) -> None:
    """Verification report: accuracy, precision, recall, F1, ROC AUC, EER, TAR@FAR, best τ."""
    from facesearch.eval.evaluate import EvalOptions, evaluate

    if plot or html:  # before the embedding run, not after it: plots need the plot extra
        require("matplotlib", "evaluate --plot and --html")
    opts = EvalOptions(data=[str(d) for d in data], weights=weights, pairs_file=str(pairs) if pairs else None,
                       tau=tau, detector=detector, device=device, max_impostors=max_impostors, seed=seed)
    with out.progress(quiet or json_out) as bar:
        task = bar.add_task("embedding", total=None, status="")
        result = evaluate(opts, lambda done, total: bar.update(task, completed=done, total=total))
    report = result.report
    if plot:
        from facesearch.report.roc import plot_roc

        title = f"{Path(opts.data[0]).name} · {report['model_id']}"
        report["plot"] = str(plot_roc(result.dist, result.same, plot, tau=report["tau"], title=title))
    if html:
        from facesearch.report import render_evaluate_html

        report["html"] = str(html)
        render_evaluate_html(report, result.dist, result.same, html, pairs=result.pairs)
    if json_out:
        return out.emit_json(report)
    out.stdout().print(out.table(f"evaluate {', '.join(opts.data)}", ["metric", "value"],
                                 [(k, report.get(k)) for k in REPORT_KEYS]))
    if report.get("bad_files"):
        out.info(f"{len(report['bad_files'])} unreadable files skipped")
    for key in ("plot", "html"):
        if report.get(key):
            out.info(f"{key}: {report[key]}")
