"""What a biologist takes from a sweep: embeddings, UMAPs, integration against PCA, a report.

After the trials, for the best ``outputs.best_n`` trials: every cell's ``z_i`` and ``z_s`` in
``<trial>/embedding.h5ad`` (with a UMAP of ``z_i``), a UMAP picture coloured by cell type and by
batch, and loss curves. For the sweep: integration scores of the trials against PCA of the
log-normalised counts on the same validation cells, metric-against-hyperparameter plots, the
seed spread, all in ``report.html`` / ``report.md``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from sweeper.benchmark.report import benchmark_blocks
from sweeper.document import Image, Table, Text, render
from sweeper.plots import loss_curves_png, metric_vs_params_png, seed_spread_png, umap_png
from sweeper.report import best_point_text, group_rows, params_text
from sweeper.results import COMPLETED, BestOutput, Outputs, Summary, TrialEntry, ranked_trials
from sweeper.storage import SweepFolder
from trainables.integration import INTEGRATION_KEYS
from trainables.latent import embedding_integration
from trainables.prepared import PreparedData
from trainables.run_record import load_run

REPORT_MD, REPORT_HTML = "report.md", "report.html"
UMAP_KEY = "X_umap_invae"


def pca_baseline(data: PreparedData, n_components: int = 30) -> dict[str, float]:
    """Integration scores of PCA on the validation cells' log-normalised counts.

    Counts are scaled to 1e4 per cell and log1p-transformed: the yardstick for ``z_i``.
    """
    from sklearn.decomposition import PCA

    counts = data.val.counts
    logged = np.log1p(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) * 1e4)
    n = min(n_components, *logged.shape)
    pcs = PCA(n_components=n, random_state=0).fit_transform(logged)
    return embedding_integration(pcs, data.val.bio_codes, data.val.tech_codes)


def umap_coordinates(z: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D UMAP of an embedding (umap-learn; fixed seed, so single-threaded and repeatable)."""
    import umap

    return umap.UMAP(n_neighbors=15, min_dist=0.3, random_state=seed, n_jobs=1).fit_transform(z)


def umap_obsm(z_i: np.ndarray) -> dict[str, np.ndarray]:
    """The UMAP of ``z_i`` as the embedding file's ``obsm`` entry."""
    return {UMAP_KEY: umap_coordinates(z_i)}


def write_outputs(
    sweep: Any, folder: SweepFolder, summary: Summary, data: PreparedData | None
) -> Outputs:
    """Embed, picture and report the best trials; return what was written (for the summary).

    Only for sweep folders on a local or shared filesystem: with cloud storage, download a
    trial and use ``invae-embed``.
    """
    from trainables.embed import embed_run

    spec = sweep.spec.outputs
    if folder.local is None or spec.best_n == 0:
        return Outputs()
    keys = sweep.data.bio_keys[:1] + sweep.data.tech_keys[:1]
    best = []
    for trial in best_trials(summary, spec.best_n):
        trial_dir = folder.local / trial.trial_dir
        extra = umap_obsm if spec.umap else None
        path, embedded = embed_run(trial_dir, trial_dir / "embedding.h5ad", extra_obsm=extra)
        history = load_run(trial_dir).history
        curve = {k: [row[k] for row in history] for k in ("epoch", "train_loss", "val_loss")}
        png = loss_curves_png([(f"trial {trial.trial_id}", curve)], title="loss curves")
        loss = _save(folder, trial.trial_dir, "loss.png", png)
        umap = None
        if spec.umap and len(keys) == 2:
            coords = embedded["obsm"][UMAP_KEY]
            png = umap_png(coords, embedded["obs"], keys, f"trial {trial.trial_id}")
            umap = _save(folder, trial.trial_dir, "umap.png", png)
        embedding = str(path.relative_to(folder.local))
        best.append(BestOutput(trial.trial_id, embedding, loss_png=loss, umap_png=umap))
    return Outputs(tuple(best), pca_baseline(data) if data is not None else None)


def benchmark_outputs(folder: SweepFolder, summary: Summary, baselines: tuple[str, ...]) -> Outputs:
    """The outputs with the scIB benchmark of the embedded best trials (``sweeper.benchmark``).

    ``baselines``: the trained baselines beside PCA (``outputs.baselines``).
    """
    from sweeper.benchmark.publish import benchmark_best

    outputs = summary.outputs or Outputs()
    best = [(b.trial_id, summary.trial(b.trial_id).trial_dir, b.embedding) for b in outputs.best]
    return replace(outputs, benchmark=benchmark_best(folder, best, baselines))


def best_trials(summary: Summary, n: int) -> list[TrialEntry]:
    """The ``n`` best completed trials by the sweep's metric and mode."""
    return ranked_trials(summary.trials, summary.metric, summary.mode)[:n]


def write_sweep_report(folder: SweepFolder, summary: Summary) -> tuple[str, str] | None:
    """``report.md`` and ``report.html``: results, integration against PCA, plots."""
    if folder.local is None:
        return None
    blocks: list[Any] = [Text(f"Sweep {summary.name}", 1), *_overview(summary)]
    blocks += _integration_blocks(summary)
    blocks += benchmark_blocks(folder, summary.outputs.benchmark if summary.outputs else None)
    for name, png, caption in _sweep_figures(summary):
        folder.write_bytes(name, png)
        blocks.append(Image(name, png, caption, caption))
    for entry in summary.outputs.best if summary.outputs else ():
        trial = summary.trial(entry.trial_id)
        blocks.append(Text(f"Trial {trial.trial_id}: {params_text(trial.params)}", 2))
        blocks.append(Text(f"Embedding of every cell: {entry.embedding}"))
        for path, caption in (
            (entry.umap_png, "UMAP of z_i by cell type and by batch"),
            (entry.loss_png, "Training and validation loss"),
        ):
            if path is not None:
                blocks.append(Image(path, folder.read_bytes(path), caption, caption))
    title = f"Sweep {summary.name}"
    md, html = render(blocks, title, folder.local / REPORT_MD, folder.local / REPORT_HTML)
    return str(md), str(html)


def _save(folder: SweepFolder, trial_dir: str, name: str, png: bytes) -> str:
    """Write a trial's PNG; return its path relative to the sweep folder."""
    folder.write_bytes(f"{trial_dir}/{name}", png)
    return f"{trial_dir}/{name}"


def _overview(summary: Summary) -> list[Any]:
    rows = group_rows(summary)
    blocks = [
        Text(
            f"{summary.n_completed} of {summary.n_trials} trials completed, "
            f"{summary.n_errored} errored; best trial {summary.best_trial} by {summary.metric}."
        )
    ]
    point = best_point_text(summary)
    blocks += [Text(point[0].upper() + point[1:] + ".")] if point else []
    return blocks + ([Table(rows)] if rows else [])


def _integration_blocks(summary: Summary) -> list[Any]:
    rows = []
    outputs = summary.outputs or Outputs()
    if outputs.baseline_pca:
        rows.append({"embedding": "PCA of log-normalised counts", **_scores(outputs.baseline_pca)})
    for entry in outputs.best:
        trial = summary.trial(entry.trial_id)
        rows.append({"embedding": f"inVAE z_i, trial {trial.trial_id}", **_scores(trial.metrics)})
    if not rows:
        return []
    return [Text("Integration on the validation cells (higher is better)", 2), Table(rows)]


def _scores(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics.get(k, math.nan) for k in INTEGRATION_KEYS}


def _sweep_figures(summary: Summary) -> list[tuple[str, bytes, str]]:
    figures = []
    done = [t for t in summary.trials if t.status == COMPLETED]
    if done and done[0].params:
        figures.append(
            (
                "metric_vs_params.png",
                metric_vs_params_png(done, summary.metric),
                f"{summary.metric} against each searched hyperparameter, by seed",
            )
        )
    if summary.groups:
        figures.append(
            (
                "seed_spread.png",
                seed_spread_png(summary.groups, summary.metric),
                f"{summary.metric}: mean ± std over seeds per hyperparameter point, in order",
            )
        )
    return figures
