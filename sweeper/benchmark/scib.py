"""scib-metrics' ``Benchmarker`` on a set of embeddings of the same cells: its table and plot.

The metrics are scib-metrics' own defaults (bio conservation: isolated labels, KMeans NMI and
ARI, silhouette label, cLISI; batch correction: BRAS, iLISI, kBET, graph connectivity, PCR
comparison) and so are the aggregates (``Total = 0.6 bio + 0.4 batch``); nothing is
recomputed here. The unintegrated embedding (PCA) is its ``pre_integrated_embedding``.
"""

from __future__ import annotations

import io
from importlib import metadata

import numpy as np

from sweeper.benchmark.records import EmbeddingScores

LIBRARY = "scib-metrics"
INSTALL = "pip install 'invae-sweep[scib]'"
_AGGREGATES = {"Bio conservation", "Batch correction", "Total"}
_METRIC_TYPE = "Metric Type"  # the row of scib-metrics' results that says each column's kind


def missing_reason() -> str | None:
    """Why the benchmark cannot run here, in one line; None when scib-metrics imports."""
    try:
        import scib_metrics  # noqa: F401
    except ImportError as err:
        return f"{LIBRARY} is not installed ({INSTALL}): {err}"
    return None


def library() -> str:
    """The scoring library and its version, e.g. ``scib-metrics 0.5.10``."""
    return f"{LIBRARY} {metadata.version(LIBRARY)}"


def benchmark(
    embeddings: dict[str, np.ndarray], unintegrated: str, labels: np.ndarray, batches: np.ndarray
):
    """Run the ``Benchmarker`` on every embedding (CPU JAX, one job, no progress bars).

    Args:
        embeddings: ``{name: (n_cells, n_dims)}``, the same cells in the same order.
        unintegrated: The name of the unintegrated embedding among them (PCA).
        labels: ``(n_cells,)`` cell types.
        batches: ``(n_cells,)`` batches.

    Returns:
        The benchmarked ``scib_metrics.benchmark.Benchmarker``.
    """
    import anndata as ad
    import pandas as pd
    from scib_metrics.benchmark import Benchmarker

    obs = pd.DataFrame({"label": np.asarray(labels, str), "batch": np.asarray(batches, str)})
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(obs=obs, obsm={k: np.asarray(v, np.float32) for k, v in embeddings.items()})
    bench = Benchmarker(
        adata,
        batch_key="batch",
        label_key="label",
        embedding_obsm_keys=list(embeddings),
        pre_integrated_embedding_obsm_key=unintegrated,
        n_jobs=1,
        progress_bar=False,
    )
    bench.benchmark()
    return bench


def score_rows(bench, sources: dict[str, str]) -> tuple[EmbeddingScores, ...]:
    """The benchmark's results (unscaled) as records, best total first."""
    table = bench.get_results(min_max_scale=False).drop(_METRIC_TYPE)
    rows = []
    for name, row in table.iterrows():
        values = {str(k): float(v) for k, v in row.items()}
        rows.append(
            EmbeddingScores(
                embedding=str(name),
                source=sources[str(name)],
                metrics={k: v for k, v in values.items() if k not in _AGGREGATES},
                bio_conservation=values["Bio conservation"],
                batch_correction=values["Batch correction"],
                total=values["Total"],
            )
        )
    return tuple(sorted(rows, key=lambda r: -r.total))


def results_csv(bench) -> bytes:
    """scib-metrics' results table, as it gives it (its ``Metric Type`` row included)."""
    return bench.get_results(min_max_scale=False).to_csv().encode()


def results_png(bench) -> bytes:
    """scib-metrics' standard results plot (``plot_results_table``, unscaled) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = bench.plot_results_table(min_max_scale=False, show=False)
    figure = table.ax.figure
    out = io.BytesIO()
    figure.savefig(out, format="png", facecolor=table.ax.get_facecolor(), dpi=100)
    plt.close(figure)
    return out.getvalue()
