"""Baseline embeddings of every cell, for the scIB table beside inVAE's ``z_i``.

PCA of the log-normalised counts is always there (it is also scib-metrics' unintegrated
embedding). The original inVAE's FinVAE (PyPI ``invae==0.1.0``, installed with
``pip install --no-deps invae==0.1.0``) and scvi-tools' SCVI (``pip install
'invae-sweep[scvi]'``) are trained when installed: on the trial's training cells, for the
trial's epochs and batch size, with its latent and hidden sizes, then embed every cell.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from trainables.config import TrainConfig
from trainables.prepared import Split

SEED = 0  # the baselines' seed
PCA_COMPONENTS = 30
FINVAE_LR, FINVAE_WEIGHT_DECAY = 1e-3, 1e-4  # the original's defaults in its examples


@dataclass(frozen=True, eq=False)
class Cells:
    """What the baselines train on and embed.

    Attributes:
        counts: ``(n_cells, n_genes)`` raw counts of every cell in the trial's genes.
        labels: ``(n_cells,)`` cell type (the first biological key), as strings.
        batches: ``(n_cells,)`` batch (the first technical key), as strings.
        train: The trial's training cells (its prepared training split).
        train_labels: ``(n_train,)`` their cell types, as strings.
        train_batches: ``(n_train,)`` their batches, as strings.
        config: The trial's train config (epochs, batch size, latent and hidden sizes).
    """

    counts: np.ndarray
    labels: np.ndarray
    batches: np.ndarray
    train: Split
    train_labels: np.ndarray
    train_batches: np.ndarray
    config: TrainConfig


@dataclass(frozen=True)
class Baseline:
    """A trained baseline: the package that must be importable, how to install it, the trainer."""

    module: str
    install: str
    train: Callable[[Cells], tuple[np.ndarray, str]]


def log_normalised(counts: np.ndarray) -> np.ndarray:
    """Counts scaled to 1e4 per cell, then ``log1p``: ``(n_cells, n_genes)``."""
    return np.log1p(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) * 1e4)


def pca(cells: Cells) -> tuple[np.ndarray, str]:
    """PCA (30 components) of every cell's log-normalised counts: the unintegrated embedding."""
    from sklearn.decomposition import PCA

    logged = log_normalised(cells.counts)
    n = min(PCA_COMPONENTS, *logged.shape)
    pcs = PCA(n_components=n, random_state=SEED).fit_transform(logged)
    return pcs.astype(np.float32), f"scikit-learn {metadata.version('scikit-learn')} PCA, {n} PCs"


def finvae(cells: Cells) -> tuple[np.ndarray, str]:
    """The original inVAE's FinVAE: trained on the training cells, ``z_i`` of every cell."""
    import anndata as ad
    import pandas as pd
    import torch
    from inVAE import FinVAE

    cfg, model = cells.config, cells.config.model
    torch.manual_seed(SEED)
    covariates = {"celltype": cells.train_labels, "tech": cells.train_batches}
    keys = {"inv_covar_keys": {"cat": ["celltype"], "cont": []}}
    keys["spur_covar_keys"] = {"cat": ["tech"], "cont": []}
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        vae = FinVAE(
            adata=ad.AnnData(X=cells.train.counts, obs=pd.DataFrame(covariates)),
            layer=None,
            **keys,
            latent_dim_inv=model.z_i_dim,
            latent_dim_spur=model.z_s_dim,
            n_layers=len(model.hidden),
            hidden_dim=model.hidden[0],
            device="cpu",
            batch_size=_batch_size(cfg.batch_size, cells.train.n_cells),
            dropout_rate=model.dropout,
            inject_covar_in_latent=model.inject_covariates,
        )
        vae.train(
            n_epochs=cfg.n_epochs,
            lr_train=FINVAE_LR,
            weight_decay=FINVAE_WEIGHT_DECAY,
            print_every_n_epochs=cfg.n_epochs,
        )
        every = ad.AnnData(
            X=cells.counts,
            obs=pd.DataFrame({"celltype": cells.labels, "tech": cells.batches}),
        )
        z = vae.get_latent_representation(every, latent_type="invariant")
    source = f"invae {metadata.version('invae')} FinVAE, {cfg.n_epochs} epochs"
    return np.asarray(z, np.float32), source


def scvi(cells: Cells) -> tuple[np.ndarray, str]:
    """scvi-tools' SCVI (the batch as batch key): trained on the training cells, z of every cell."""
    import scvi as scvi_tools

    with _quiet("lightning.pytorch", "lightning.fabric", "scvi"):  # its INFO lines, its tips
        scvi_tools.settings.seed = SEED
        return _train_scvi(scvi_tools, cells)


def _train_scvi(scvi_tools, cells: Cells) -> tuple[np.ndarray, str]:
    import anndata as ad
    import pandas as pd

    cfg, model = cells.config, cells.config.model
    train = ad.AnnData(X=cells.train.counts, obs=pd.DataFrame({"batch": cells.train_batches}))
    scvi_tools.model.SCVI.setup_anndata(train, batch_key="batch")
    vae = scvi_tools.model.SCVI(
        train,
        n_latent=model.z_i_dim,
        n_hidden=model.hidden[0],
        n_layers=len(model.hidden),
        dropout_rate=model.dropout,
    )
    vae.train(
        max_epochs=cfg.n_epochs,
        accelerator="cpu",
        devices=1,
        train_size=1.0,  # every training cell: no split of its own
        batch_size=_batch_size(cfg.batch_size, cells.train.n_cells),
        early_stopping=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    every = ad.AnnData(X=cells.counts, obs=pd.DataFrame({"batch": cells.batches}))
    z = vae.get_latent_representation(every)
    version = metadata.version("scvi-tools")
    return np.asarray(z, np.float32), f"scvi-tools {version} SCVI, {cfg.n_epochs} epochs"


TRAINED: dict[str, Baseline] = {
    "FinVAE": Baseline("inVAE", "pip install --no-deps invae==0.1.0", finvae),
    "scVI": Baseline("scvi", "pip install 'invae-sweep[scvi]'", scvi),
}


def baseline_embeddings(
    cells: Cells, names: tuple[str, ...], trained: dict[str, Baseline] = TRAINED
) -> tuple[dict[str, tuple[np.ndarray, str]], tuple[str, ...]]:
    """PCA and the named trained baselines: ``{name: (embedding, source)}``, and the absent.

    Args:
        cells: What they train on and embed.
        names: The trained baselines wanted (``outputs.baselines``), keys of ``trained``.
        trained: The trained baselines there are.

    Returns:
        The embeddings ``(n_cells, n_dims)`` with what made them, and one line per baseline
        not installed, saying how to install it.
    """
    import importlib.util

    embeddings = {"PCA": pca(cells)}
    absent = []
    for name in names:
        baseline = trained[name]
        if importlib.util.find_spec(baseline.module) is None:
            absent.append(f"{name}: {baseline.module} is not installed ({baseline.install})")
            continue
        embeddings[name] = baseline.train(cells)
    return embeddings, tuple(absent)


def _batch_size(batch_size: int, n_cells: int) -> int:
    """The trial's batch size, one more if the last minibatch would hold a single cell.

    A one-cell minibatch makes BatchNorm raise in training (FinVAE and SCVI both use it).
    """
    return batch_size + 1 if n_cells % batch_size == 1 else batch_size


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Raise these loggers to WARNING for the block, then put their levels back."""
    import logging

    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
