"""Latent representations of any compatible dataset from a trained run, as an .h5ad file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainables.constants import RUN_FILE
from trainables.data import embedding_inputs, load_anndata, write_embedding
from trainables.latent import latent_means, load_model
from trainables.run_record import load_model_file, load_run

LATENT_KEYS = {"inv": "X_invae_inv", "spur": "X_invae_spur"}  # obsm keys of z_i and z_s


def embed_run(
    run_dir: str | Path,
    out: str | Path,
    data_overrides: dict[str, Any] | None = None,
    extra_obsm: dict[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Embed every cell of a dataset with a trained run and write ``obsm`` to ``out``.

    Args:
        run_dir: A folder holding the run's ``run.json`` and ``model.pt``.
        out: The .h5ad to write (obs, ``obsm['X_invae_inv']``, ``obsm['X_invae_spur']``).
        data_overrides: Changes to the run's data config (``{"data_path": "other.h5ad"}``);
            none embeds the run's own input data, every cell of it.
        extra_obsm: A function of ``z_i`` returning more ``obsm`` entries (e.g. a UMAP).

    Returns:
        The written path, and ``{"obsm", "obs"}`` (the latents and the cells) for further use.

    Raises:
        ResultFileError: ``run.json`` or ``model.pt`` missing or corrupt.
        DataError: The dataset does not fit the model (genes, obs keys, categories).
    """
    record, model_file = load_run(run_dir), load_model_file(run_dir)
    data_cfg = record.config.data_config(str(Path(run_dir) / RUN_FILE), data_overrides)
    adata = load_anndata(data_cfg)
    genes, categories = model_file["data"]["genes"], model_file["data"]["categories"]
    counts, bio, tech = embedding_inputs(adata, data_cfg, genes, categories)
    z_i, z_s = latent_means(load_model(model_file), counts, bio, tech)
    obsm = {LATENT_KEYS["inv"]: z_i, LATENT_KEYS["spur"]: z_s}
    if extra_obsm is not None:
        obsm |= extra_obsm(z_i)
    meta = {
        "run": str(Path(run_dir).resolve()),
        "weights_sha256": record.fingerprint.weights,
        "data_path": data_cfg.data_path,
        "categories": categories,
    }
    path = write_embedding(adata, obsm, out, meta)
    return path, {"obsm": obsm, "obs": adata.obs}
