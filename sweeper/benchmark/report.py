"""The scIB benchmark in the sweep report: one table and scib-metrics' plot per trial."""

from __future__ import annotations

from typing import Any

from sweeper.benchmark.records import Benchmark, TrialBenchmark
from sweeper.document import Image, Table, Text
from sweeper.storage import SweepFolder

HEADING = "scIB benchmark of every cell (higher is better)"


def benchmark_blocks(folder: SweepFolder, benchmark: Benchmark | None) -> list[Any]:
    """The report's scIB section; when there is no table, one line saying why."""
    if benchmark is None:
        return []
    blocks: list[Any] = [Text(HEADING, 2)]
    if benchmark.absent is not None:
        blocks.append(Text(f"No scIB table: {benchmark.absent}.", css="note"))
    for trial in benchmark.trials:
        blocks += [Text(_caption(trial, benchmark.library)), Table(table_rows(trial))]
        blocks += [Text(f"Baseline absent: {line}", css="note") for line in trial.absent]
        if trial.plot_png is not None:
            path = f"{trial.folder}/{trial.plot_png}"
            caption = f"{benchmark.library} results, trial {trial.trial_id}"
            blocks.append(Image(path, folder.read_bytes(path), caption, caption))
    return blocks


def table_rows(trial: TrialBenchmark) -> list[dict[str, Any]]:
    """One row per embedding: scib-metrics' metrics, its aggregates, and what made it."""
    return [
        {
            "embedding": row.embedding,
            **row.metrics,
            "Bio conservation": row.bio_conservation,
            "Batch correction": row.batch_correction,
            "Total": row.total,
            "made by": row.source,
        }
        for row in trial.rows
    ]


def _caption(trial: TrialBenchmark, library: str | None) -> str:
    return (
        f"Trial {trial.trial_id}: {library} Benchmarker on all {trial.n_cells} cells "
        f"(cell type: {trial.label_key}, batch: {trial.batch_key}); baselines trained "
        f"{trial.n_epochs} epochs on the trial's training cells; PCA is the unintegrated "
        f"embedding. Files: {trial.folder}/ ({trial.seconds:.0f} s)."
    )
