"""Counts in, training arrays out: the only module that touches AnnData or scanpy.

:func:`prepare_data` loads the input (the simulator, a named dataset or an ``.h5ad`` file),
checks it, keeps the ``n_top_genes`` highly variable genes (scanpy's ``seurat_v3`` flavour on
raw counts), one-hot encodes the covariates and splits the cells into train and validation sets,
stratified on the combination of all covariates. The result is cached on disk under the sha256
of the input, the data config and :data:`PREP_VERSION`, so a second call skips scanpy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.model_selection import train_test_split

from trainables.config import SIMULATED, DataConfig
from trainables.datasets import DataError, DataWarning, cache_dir, input_path
from trainables.files import atomic_path
from trainables.prepared import (
    PREP_VERSION,
    PreparedData,
    StoredData,
    assemble,
    read_cache,
    write_cache,
)
from trainables.schema import config_to_dict, suggest
from trainables.simulate import SIMULATOR_VERSION, simulate

MIN_STRATUM_CELLS = 2
"""Strata (covariate combinations) with fewer cells are pooled before the stratified split."""


def load_anndata(cfg: DataConfig) -> ad.AnnData:
    """Load the raw input: simulated, a named dataset (downloaded if allowed) or an .h5ad file.

    Args:
        cfg: The data config; ``data_path`` selects the input.

    Returns:
        The AnnData as stored (simulated data: counts in ``X``, obs ``celltype`` and ``tech``).

    Raises:
        DataError: The file is missing or unreadable, or a named dataset is absent and
            ``download`` is false.
    """
    path = input_path(cfg)
    return _simulated_anndata(cfg) if path is None else _read_h5ad(path)


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Load, check, select genes, one-hot encode and split; cached on disk.

    Args:
        cfg: The data config.

    Returns:
        The train and validation splits with their genes, categories and source.

    Raises:
        DataError: The input is missing, unreadable, not raw counts, empty, lacks an obs key or
            a layer, has missing covariate values or fewer genes than ``n_top_genes``.
    """
    path = input_path(cfg)
    if path is None:
        sim = {"simulator": SIMULATOR_VERSION, **config_to_dict(cfg.simulation)}
        input_sha = hashlib.sha256(json.dumps(sim, sort_keys=True).encode()).hexdigest()
    else:
        with path.open("rb") as handle:
            input_sha = hashlib.file_digest(handle, "sha256").hexdigest()
    key = _cache_key(cfg, input_sha)
    cache_file = cache_dir(cfg) / "prepared" / f"{key}.npz"
    stored = read_cache(cache_file, key)
    if stored is None:
        adata = _simulated_anndata(cfg) if path is None else _read_h5ad(path)
        source = {"data_path": cfg.data_path, "input_sha256": input_sha, "cache_key": key}
        stored = _build(adata, cfg, source, str(path or SIMULATED))
        write_cache(cache_file, stored)
    prepared = assemble(stored, len(cfg.bio_keys))
    _warn_single_categories(prepared, str(path or SIMULATED))
    return prepared


def _warn_single_categories(prepared: PreparedData, where: str) -> None:
    """A covariate with one category carries no information: say so, once per preparation."""
    for section, categories in (
        ("bio", prepared.bio_categories),
        ("tech", prepared.tech_categories),
    ):
        for key, names in categories.items():
            if len(names) < 2:
                warnings.warn(
                    DataWarning(
                        f"{where}: obs[{key!r}] ({section}_keys) has one category only "
                        f"({names[0]!r}): the model can learn nothing from it"
                    ),
                    stacklevel=3,
                )


def _read_h5ad(path: Path) -> ad.AnnData:
    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"{path}: not a readable .h5ad file ({err})") from err


def _simulated_anndata(cfg: DataConfig) -> ad.AnnData:
    sim = simulate(cfg.simulation)
    width = len(str(len(sim.celltype)))
    obs = pd.DataFrame(
        {"celltype": pd.Categorical(sim.celltype), "tech": pd.Categorical(sim.tech)},
        index=[f"cell_{i:0{width}d}" for i in range(1, len(sim.celltype) + 1)],
    )
    return ad.AnnData(X=sim.counts, obs=obs, var=pd.DataFrame(index=sim.gene_names))


def _cache_key(cfg: DataConfig, input_sha: str) -> str:
    config = config_to_dict(cfg)
    for local_only in ("cache_dir", "download"):
        del config[local_only]
    if cfg.data_path != SIMULATED:
        del config["simulation"]  # already in input_sha for simulated data, unused otherwise
    payload = {"prep_version": PREP_VERSION, "input_sha256": input_sha, "config": config}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --- preprocessing ---------------------------------------------------------------------------


def _build(adata: ad.AnnData, cfg: DataConfig, source: dict[str, Any], where: str) -> StoredData:
    """Check the input, select genes, drop cells without counts and split."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataError(f"{where}: empty data ({adata.n_obs} cells x {adata.n_vars} genes)")
    counts = _raw_counts(adata, cfg.counts_layer, where)
    keys = (*cfg.bio_keys, *cfg.tech_keys)
    _check_obs(adata.obs, keys, where)
    genes = _select_genes(counts, cfg.n_top_genes, where)
    counts = counts[:, genes]
    kept = np.flatnonzero(np.asarray(counts.sum(axis=1)).ravel() > 0)
    if len(kept) < 2:
        raise DataError(f"{where}: {len(kept)} cells have counts in the selected genes; need 2")
    counts = counts[kept]
    encoded = [_encode(adata.obs[key].iloc[kept]) for key in keys]
    codes = np.empty((len(kept), len(keys)), dtype=np.int64)  # (n_kept, n_keys)
    for j, (column_codes, _) in enumerate(encoded):
        codes[:, j] = column_codes
    train, val = _split(codes, cfg.val_size, cfg.random_state, where)
    source = {
        **source,
        "n_cells_input": adata.n_obs,
        "n_genes_input": adata.n_vars,
        "n_cells_dropped": adata.n_obs - len(kept),
    }
    names = [[key, list(cats)] for key, (_, cats) in zip(keys, encoded, strict=True)]
    meta = {
        "genes": adata.var_names[genes].astype(str).tolist(),
        "bio": names[: len(cfg.bio_keys)],
        "tech": names[len(cfg.bio_keys) :],
        "source": source,
    }
    return StoredData(counts, codes, kept.astype(np.int64), train, val, meta)


def _raw_counts(adata: ad.AnnData, layer: str | None, where: str) -> sparse.csr_matrix:
    """Return the counts as CSR float32 after checking they are finite non-negative integers."""
    layers = [str(k) for k in adata.layers if k is not None]  # anndata 0.13 lists X as None
    if layer is not None and layer not in layers:
        available = layers
        raise DataError(
            f"{where}: no layers[{layer!r}]; available layers: {available}"
            f"{suggest(layer, available)}"
        )
    matrix = adata.X if layer is None else adata.layers[layer]
    label = "X" if layer is None else f"layers[{layer!r}]"
    if matrix is None:
        raise DataError(f"{where}: {label} is empty; set counts_layer to the raw-count layer")
    values = matrix.data if sparse.issparse(matrix) else np.asarray(matrix)
    problem = _count_problem(values)
    if problem:
        hint = "" if layer else f"; set counts_layer (layers: {layers})"
        raise DataError(f"{where}: {label} holds {problem}; inVAE needs raw counts{hint}")
    return sparse.csr_matrix(matrix, dtype=np.float32)


def _count_problem(values: np.ndarray) -> str:
    """Describe why ``values`` are not raw counts, or return ``""``."""
    if values.dtype.kind not in "biuf":
        return f"values of type {values.dtype}"
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = values[~np.isfinite(values)].flat[0]
        return f"non-finite values (e.g. {bad})"
    for what, bad in (("negative", values < 0), ("non-integer", values != np.round(values))):
        if bad.any():
            return f"{what} values (e.g. {values[bad].flat[0]:.3g})"
    return ""


def _check_obs(obs: pd.DataFrame, keys: tuple[str, ...], where: str) -> None:
    columns = [str(c) for c in obs.columns]
    for key in keys:
        if key not in obs.columns:
            raise DataError(
                f"{where}: obs key {key!r} not found; available obs columns: {columns}"
                f"{suggest(key, columns)}"
            )
        missing = obs[key].isna().to_numpy()
        if missing.any():
            raise DataError(
                f"{where}: obs[{key!r}] has {missing.sum()} missing values "
                f"(first in cell {obs.index[missing][0]!r})"
            )


def _select_genes(counts: sparse.csr_matrix, n_top_genes: int, where: str) -> np.ndarray:
    """Return the column indices of the ``seurat_v3`` highly variable genes, in input order."""
    n_genes = counts.shape[1]
    if n_genes < n_top_genes:
        raise DataError(f"{where}: {n_genes} genes, fewer than n_top_genes={n_top_genes}")
    if n_genes == n_top_genes:
        return np.arange(n_genes)
    import scanpy as sc  # imported here: ~4 s, and not needed on a cache hit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ad.ImplicitModificationWarning)  # integer var names
        frame = ad.AnnData(X=counts)
    hvg = sc.pp.highly_variable_genes(
        frame, flavor="seurat_v3", n_top_genes=n_top_genes, inplace=False
    )
    return np.flatnonzero(hvg["highly_variable"].to_numpy())


def _encode(column: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Return int64 codes and category names: categorical order, else sorted unique strings."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.cat.remove_unused_categories()
        return column.cat.codes.to_numpy(np.int64), tuple(map(str, column.cat.categories))
    names, codes = np.unique(column.astype(str).to_numpy(), return_inverse=True)
    return codes.astype(np.int64), tuple(names.tolist())


def _split(
    codes: np.ndarray, val_size: float, random_state: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted train and validation rows, stratified on the covariate combinations."""
    n_cells = len(codes)
    n_val = int(np.ceil(val_size * n_cells))
    if n_val >= n_cells:
        raise DataError(f"{where}: {n_cells} cells are too few for val_size={val_size}")
    combos = np.column_stack([np.zeros(n_cells, np.int64), codes])  # no keys: one stratum
    _, strata, sizes = np.unique(combos, axis=0, return_inverse=True, return_counts=True)
    strata = strata.reshape(-1)
    ranked = np.argsort(-sizes, kind="stable")
    kept = ranked[sizes[ranked] >= MIN_STRATUM_CELLS]
    max_strata = min(n_val, n_cells - n_val)  # sklearn needs a cell of each class per side
    if len(kept) < len(sizes) or len(kept) > max_strata:
        kept = kept[: max_strata - 1]  # leave room for the pool of rare strata
    pooled = ~np.isin(strata, kept)
    strata[pooled] = ranked[0] if pooled.sum() == 1 else -1  # a pool of one joins the largest
    train, val = train_test_split(
        np.arange(n_cells), test_size=n_val, random_state=random_state, stratify=strata
    )
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


# --- embedding: a trained run's genes and categories applied to any compatible dataset -------


def embedding_inputs(
    adata: ad.AnnData, cfg: DataConfig, genes: list[str], categories: dict[str, dict]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of a run's genes and one-hot covariates in the run's category order, all cells.

    Args:
        adata: The dataset to embed.
        cfg: Which layer holds the counts (``counts_layer``).
        genes: The run's genes, in model column order.
        categories: The run's ``{"bio": {key: names}, "tech": {key: names}}``.

    Returns:
        ``counts (n_cells, n_genes)``, ``bio (n_cells, n_bio)``, ``tech (n_cells, n_tech)``.

    Raises:
        DataError: Genes, obs keys or layers missing, or covariate values the run never saw.
    """
    where = cfg.data_path
    counts = _raw_counts(adata, cfg.counts_layer, where)
    position = {str(g): i for i, g in enumerate(adata.var_names)}
    missing = [g for g in genes if g not in position]
    if missing:
        raise DataError(
            f"{where}: {len(missing)} of the model's {len(genes)} genes are missing "
            f"(e.g. {missing[:3]}); embed data measured on the same genes"
        )
    counts = counts[:, [position[g] for g in genes]].toarray().astype(np.float32)
    blocks = []
    for section in ("bio", "tech"):
        keys = tuple(categories[section])
        _check_obs(adata.obs, keys, where)
        onehots = [_onehot(adata.obs[k], categories[section][k], k) for k in keys]
        empty = np.zeros((adata.n_obs, 0), dtype=np.float32)
        blocks.append(np.concatenate([empty, *onehots], axis=1))
    return counts, blocks[0], blocks[1]


def write_embedding(
    adata: ad.AnnData, latents: dict[str, np.ndarray], path: str | Path, meta: dict[str, Any]
) -> Path:
    """Write the cells' obs and latent representations (``obsm``) to an .h5ad, atomically.

    The counts are not copied: join with the source data on ``obs_names``.
    """
    out = ad.AnnData(obs=adata.obs.copy(), obsm=dict(latents))
    out.uns["invae"] = meta
    with atomic_path(path, suffix=".h5ad") as tmp, _nullable_strings_allowed():
        out.write_h5ad(tmp)
    return Path(path)


def _nullable_strings_allowed() -> Any:
    """Let anndata write pandas string arrays (readable by anndata >= 0.11).

    pandas 3 reads an h5ad's strings as its string dtype, and anndata itself makes the index
    of an AnnData built from ``obs`` alone one; anndata 0.12 refuses to write them unless
    ``allow_write_nullable_strings`` is set (anndata 0.13 writes them by default). Older
    anndata has no such setting and writes what pandas 2 gives it.
    """
    settings = getattr(ad, "settings", None)
    if settings is None or not hasattr(settings, "allow_write_nullable_strings"):
        return contextlib.nullcontext()
    return settings.override(allow_write_nullable_strings=True)


def _onehot(column: pd.Series, names: list[str], key: str) -> np.ndarray:
    values = column.astype(str).to_numpy()
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DataError(
            f"obs[{key!r}] has values the model was not trained on: {unknown[:5]} "
            f"(known: {names[:10]})"
        )
    return np.eye(len(names), dtype=np.float32)[[index[v] for v in values]]
