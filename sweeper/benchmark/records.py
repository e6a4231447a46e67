"""What a sweep keeps of its scIB benchmark: typed records, in ``summary.json`` and on disk."""

from __future__ import annotations

from dataclasses import dataclass

BENCHMARK_DIR = "benchmark"  # under the sweep folder: one folder per benchmarked trial
RECORD_FILE = "benchmark.json"  # a trial's TrialBenchmark, in its folder
TABLE_FILE = "scib_results.csv"
PLOT_FILE = "scib_results.png"
EMBEDDINGS_FILE = "embeddings.h5ad"  # every cell's embedding of each row, as scored
TRAINED_BASELINES = ("FinVAE", "scVI")  # trained beside inVAE when installed; PCA always


@dataclass(frozen=True)
class EmbeddingScores:
    """One row of the scIB table: an embedding of every cell and its scores (higher is better).

    Attributes:
        embedding: The row's name (``inVAE``, ``PCA``, ``FinVAE``, ``scVI``), its ``obsm`` key
            in the embeddings file.
        source: What made it, with versions (e.g. ``scvi-tools 1.4.2 SCVI, 200 epochs``).
        metrics: scib-metrics' metrics by its own column names (``Isolated labels``, ``KBET``...).
        bio_conservation: Mean of the bio-conservation metrics.
        batch_correction: Mean of the batch-correction metrics.
        total: ``0.6 * bio_conservation + 0.4 * batch_correction`` (scib-metrics' weights).
    """

    embedding: str
    source: str
    metrics: dict[str, float]
    bio_conservation: float
    batch_correction: float
    total: float


@dataclass(frozen=True)
class TrialBenchmark:
    """The scIB benchmark of one trial's ``z_i`` against the baselines, on every cell.

    Attributes:
        trial_id: The trial.
        folder: Its benchmark folder, relative to the sweep folder; the files below are in it.
        rows: One per embedding, best total first.
        absent: Baselines that are not in the table, each with why (one line).
        n_cells: Cells scored (every cell of the trial's input data).
        n_epochs: Epochs the trained baselines had (the trial's own).
        label_key: The ``obs`` key scored as cell type (the first biological key).
        batch_key: The ``obs`` key scored as batch (the first technical key).
        seconds: Wall time of training the baselines and scoring, in seconds.
    """

    FILE_NAME = RECORD_FILE

    trial_id: str
    folder: str
    rows: tuple[EmbeddingScores, ...]
    absent: tuple[str, ...]
    n_cells: int
    n_epochs: int
    label_key: str
    batch_key: str
    seconds: float
    table_csv: str = TABLE_FILE
    plot_png: str | None = PLOT_FILE
    embeddings: str = EMBEDDINGS_FILE


@dataclass(frozen=True)
class Benchmark:
    """The sweep's scIB benchmark: the best trials' tables, or why there are none.

    Attributes:
        library: The scoring library and its version (``scib-metrics 0.5.10``); None if absent.
        trials: One benchmark per best trial that has an embedding.
        absent: Why there is no table, in one line (the extra is not installed, no embedding).
    """

    library: str | None = None
    trials: tuple[TrialBenchmark, ...] = ()
    absent: str | None = None
