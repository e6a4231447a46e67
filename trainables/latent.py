"""Cells' latent representations from a trained model, and their integration quality.

Tensors and arrays only: AnnData input and output live in ``trainables.data``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainables.config import ModelConfig
from trainables.integration import can_score, integration_metrics
from trainables.model import InVAE
from trainables.schema import config_from_dict

CELLS_PER_PASS = 8192  # cells per forward pass without gradients (evaluation, embedding)


@torch.no_grad()
def latent_means(
    model: InVAE, counts: Any, bio: Any, tech: Any, chunk: int = CELLS_PER_PASS
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means of ``z_i`` and ``z_s`` for every cell, in eval mode.

    Args:
        model: A trained module (left in eval mode).
        counts: ``(n_cells, n_genes)`` raw counts (array or tensor).
        bio: ``(n_cells, n_bio)`` one-hot biological covariates.
        tech: ``(n_cells, n_tech)`` one-hot technical covariates.
        chunk: Cells per forward pass.

    Returns:
        ``z_i`` ``(n_cells, z_i_dim)`` and ``z_s`` ``(n_cells, z_s_dim)``, float32.
    """
    model.eval()
    device = next(model.parameters()).device
    tensors = [torch.as_tensor(a, dtype=torch.float32) for a in (counts, bio, tech)]
    parts_i, parts_s = [], []
    for start in range(0, tensors[0].shape[0], chunk):
        z_i, z_s = model.latent(*(t[start : start + chunk].to(device) for t in tensors))
        parts_i.append(z_i.cpu())
        parts_s.append(z_s.cpu())
    return torch.cat(parts_i).numpy(), torch.cat(parts_s).numpy()


def embedding_integration(
    z_i: np.ndarray, bio_codes: np.ndarray, tech_codes: np.ndarray
) -> dict[str, float]:
    """Integration metrics of ``z_i``: first biological key as cell type, first technical as batch.

    Empty when either key is missing or there are too few cell types to score.
    """
    if bio_codes.shape[1] == 0 or tech_codes.shape[1] == 0:
        return {}
    cell_types, batches = bio_codes[:, 0], tech_codes[:, 0]
    if not can_score(cell_types):
        return {}
    return integration_metrics(z_i, cell_types, batches)


def load_model(model_file: dict[str, Any]) -> InVAE:
    """Rebuild a trained model from a run's ``model.pt`` content (on the CPU)."""
    config = model_file["config"]["train"]["model"]
    categories = model_file["data"]["categories"]
    n_bio = sum(len(v) for v in categories["bio"].values())
    n_tech = sum(len(v) for v in categories["tech"].values())
    model = InVAE(
        len(model_file["data"]["genes"]), n_bio, n_tech, config_from_dict(ModelConfig, config)
    )
    model.load_state_dict(model_file["model"])
    return model.eval()
