"""The scIB benchmark of a sweep's best trials, written into the sweep folder.

Each benchmarked trial gets ``benchmark/<trial id>/``: scib-metrics' results table
(``scib_results.csv``), its standard plot (``scib_results.png``), every row's embedding of every
cell (``embeddings.h5ad``) and the record (``benchmark.json``), written last. A folder whose
record exists is read back, never written again, and nothing outside ``benchmark/`` is
touched, so the trials' files stay as they were.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.benchmark import scib
from sweeper.benchmark.baselines import Cells, baseline_embeddings
from sweeper.benchmark.records import (
    BENCHMARK_DIR,
    EMBEDDINGS_FILE,
    PLOT_FILE,
    RECORD_FILE,
    TABLE_FILE,
    Benchmark,
    TrialBenchmark,
)
from sweeper.results import SPEC_FILE, Summary
from sweeper.storage import SweepFolder
from trainables.constants import RUN_FILE
from trainables.files import ResultFileError
from trainables.schema import config_to_dict, read_record

INVAE = "inVAE"  # the row of the trial's z_i


def benchmark_best(
    folder: SweepFolder, best: list[tuple[str, str, str]], baselines: tuple[str, ...]
) -> Benchmark:
    """Benchmark each best trial's embedding; without scib-metrics, say why there is no table.

    Args:
        folder: The sweep folder (local or shared filesystem).
        best: ``(trial id, trial folder, embedding file)`` per trial, paths relative to it.
        baselines: The trained baselines beside PCA (``outputs.baselines``).

    Raises:
        ResultFileError: A trial's ``run.json``, ``model.pt`` or embedding is missing or corrupt.
    """
    missing = scib.missing_reason()
    if missing is not None:
        return Benchmark(absent=missing)
    if not best:
        return Benchmark(library=scib.library(), absent="no trial was embedded (outputs.best_n)")
    trials = tuple(benchmark_trial(folder, *entry, baselines) for entry in best)
    return Benchmark(library=scib.library(), trials=trials)


def benchmark_trial(
    folder: SweepFolder, trial_id: str, trial_dir: str, embedding: str, baselines: tuple[str, ...]
) -> TrialBenchmark:
    """Train the baselines on the trial's training cells and score every embedding of its cells."""
    out = f"{BENCHMARK_DIR}/{trial_id}"
    if folder.exists(f"{out}/{RECORD_FILE}"):  # done before (a resumed sweep): kept as it is
        return read_record(TrialBenchmark, folder.local / out / RECORD_FILE)
    started = time.perf_counter()
    cells, z_i, obs, keys = trial_cells(folder.local / trial_dir, folder.local / embedding)
    embeddings, absent = baseline_embeddings(cells, baselines)
    sources = {INVAE: f"invae-sweep trial {trial_id} z_i, {cells.config.n_epochs} epochs"}
    sources |= {name: source for name, (_, source) in embeddings.items()}
    arrays = {INVAE: z_i} | {name: z for name, (z, _) in embeddings.items()}
    bench = scib.benchmark(arrays, "PCA", cells.labels, cells.batches)
    rows = scib.score_rows(bench, sources)
    folder.write_bytes(f"{out}/{TABLE_FILE}", scib.results_csv(bench))
    folder.write_bytes(f"{out}/{PLOT_FILE}", scib.results_png(bench))
    _write_embeddings(folder.local / out / EMBEDDINGS_FILE, obs, arrays, sources)
    record = TrialBenchmark(
        trial_id=trial_id,
        folder=out,
        rows=rows,
        absent=absent,
        n_cells=len(z_i),
        n_epochs=cells.config.n_epochs,
        label_key=keys[0],
        batch_key=keys[1],
        seconds=round(time.perf_counter() - started, 1),
    )
    folder.write_json(f"{out}/{RECORD_FILE}", config_to_dict(record))  # last: complete
    return record


def trial_cells(trial_dir: Path, embedding: Path):
    """Every cell of a trial's input data, its training cells, and its ``z_i`` from the embedding.

    Returns:
        ``(cells, z_i (n_cells, z_i_dim), obs, (label key, batch key))``.

    Raises:
        ResultFileError: A file is missing or corrupt, or the trial has no biological or no
            technical key to score by, or the embedding is not of the trial's cells.
    """
    import anndata as ad

    from trainables.data import embedding_inputs, load_anndata, prepare_data
    from trainables.embed import LATENT_KEYS
    from trainables.run_record import load_model_file, load_run

    record, model_file = load_run(trial_dir), load_model_file(trial_dir)
    source = str(trial_dir / RUN_FILE)
    data_cfg, train_cfg = record.config.data_config(source), record.config.train_config(source)
    if not data_cfg.bio_keys or not data_cfg.tech_keys:
        raise ResultFileError(source, "scIB needs a biological and a technical key; it has not")
    label_key, batch_key = data_cfg.bio_keys[0], data_cfg.tech_keys[0]
    try:
        embedded = ad.read_h5ad(embedding)
    except (OSError, KeyError) as err:
        raise ResultFileError(embedding, f"unreadable embedding ({err})") from None
    if LATENT_KEYS["inv"] not in embedded.obsm:
        raise ResultFileError(embedding, f"has no obsm[{LATENT_KEYS['inv']!r}]")
    adata = load_anndata(data_cfg)
    if list(adata.obs_names) != list(embedded.obs_names):
        raise ResultFileError(embedding, f"its cells are not those of {data_cfg.data_path}")
    counts, _, _ = embedding_inputs(
        adata, data_cfg, model_file["data"]["genes"], model_file["data"]["categories"]
    )
    prepared = prepare_data(data_cfg)  # the trial's own split (the disk cache has it)
    train = prepared.train
    label_names = np.asarray(prepared.bio_categories[label_key], str)
    batch_names = np.asarray(prepared.tech_categories[batch_key], str)
    cells = Cells(
        counts=counts,
        labels=adata.obs[label_key].astype(str).to_numpy(),
        batches=adata.obs[batch_key].astype(str).to_numpy(),
        train=train,
        train_labels=label_names[train.bio_codes[:, 0]],
        train_batches=batch_names[train.tech_codes[:, 0]],
        config=train_cfg,
    )
    z_i = np.asarray(embedded.obsm[LATENT_KEYS["inv"]], np.float32)
    return cells, z_i, embedded.obs, (label_key, batch_key)


def _write_embeddings(path: Path, obs, arrays: dict[str, np.ndarray], sources: dict) -> None:
    import anndata as ad

    from trainables.data import write_embedding

    write_embedding(ad.AnnData(obs=obs), arrays, path, {"sources": sources})


def benchmark_sweep(
    location: str | Path, baselines: tuple[str, ...] | None = None
) -> tuple[Summary, str]:
    """Benchmark a finished sweep's embedded best trials; update its summary and report, reseal.

    ``baselines``: the trained baselines beside PCA; None: the sweep's own
    (``outputs.baselines`` in its ``sweep.json``). A trial benchmarked before keeps its table.

    The folder must be intact against its seal (``SHA256SUMS``): files are only added (under
    ``benchmark/``) and ``summary.json`` and the reports rewritten with the table, then the
    folder is sealed anew. The W&B report of the benchmark goes beside the sweep's runs.

    Returns:
        The updated summary and the new seal's SHA-256.

    Raises:
        ResultFileError: Not a finished sealed sweep folder, its seal is broken, it has no
            embedded trial, or a trial's files are missing or corrupt (one line, naming them).
    """
    from sweeper.outputs import benchmark_outputs, write_sweep_report
    from sweeper.results import load_summary, write_summary
    from sweeper.verify.seal import SEAL_FILE, write_seal

    folder = SweepFolder(location)
    if folder.local is None:
        raise ResultFileError(location, "only folders on a local or shared filesystem, not URIs")
    if not folder.local.is_dir():
        raise ResultFileError(location, "no such folder; give a finished sweep's folder")
    summary = load_summary(folder.local)
    _check_sealed(folder, SEAL_FILE)
    if not (summary.outputs and summary.outputs.best):
        raise ResultFileError(
            folder.path("summary.json"),
            "no embedded trial to benchmark (the sweep ran with outputs.best_n: 0, or its "
            "outputs failed)",
        )
    if baselines is None:
        from sweeper.spec import OutputsSpec

        baselines = _recorded_spec(folder, OutputsSpec, "outputs").baselines
    summary = replace(summary, outputs=benchmark_outputs(folder, summary, baselines))
    write_summary(folder, summary)
    write_sweep_report(folder, summary)
    _log_to_wandb(folder, summary)
    return summary, write_seal(folder)


def _check_sealed(folder: SweepFolder, seal_file: str) -> None:
    from sweeper.verify.seal import FolderReader, check_seal

    seal = check_seal(FolderReader(folder))
    if not seal.found:
        raise ResultFileError(folder.path(seal_file), f"{seal.error}; benchmark a finished sweep")
    if not seal.intact:
        raise ResultFileError(
            folder.path(seal_file),
            f"the folder no longer matches its seal ({len(seal.added)} added, "
            f"{len(seal.missing)} missing, {len(seal.changed)} changed files; invae-verify "
            "lists them): nothing was written",
        )


def _log_to_wandb(folder: SweepFolder, summary: Summary) -> None:
    """The benchmark as a W&B run of the sweep's group, unless the sweep disabled W&B."""
    from sweeper.spec import WandbSpec

    spec = _recorded_spec(folder, WandbSpec, "wandb")
    if spec.mode != "disabled":
        from sweeper.tracking import log_benchmark_run

        log_benchmark_run(spec, summary, folder.local)


def _recorded_spec(folder: SweepFolder, record_type: type, key: str) -> Any:
    """A section of the sweep file as recorded in ``sweep.json`` (its defaults where absent)."""
    from trainables.schema import record_from_dict

    return record_from_dict(record_type, folder.read_json(SPEC_FILE).get("spec", {}).get(key, {}))
