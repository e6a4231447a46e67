"""The Muon + AdamW split: Muon for hidden weight matrices, AdamW for everything else."""

from __future__ import annotations

import torch
from torch import nn

from trainables.config import TrainConfig
from trainables.model import InVAE


def split_parameters(
    model: InVAE, muon_gene_layers: bool
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Divide the trainable parameters between Muon and AdamW.

    Muon takes every 2-D weight matrix (it rejects other shapes); AdamW takes biases, BatchNorm
    parameters and the gene-wise dispersion. The gene-wide input and output matrices go to
    AdamW unless ``muon_gene_layers`` is set, as embedding-like and output layers usually are.

    Args:
        model: The inVAE module.
        muon_gene_layers: Whether Muon also takes the gene-wide weight matrices.

    Returns:
        ``(muon_params, adamw_params)``, each in ``model.parameters()`` order.
    """
    gene_weights = {id(layer.weight) for layer in model.gene_layers()}
    muon, adamw = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        to_muon = param.ndim == 2 and (muon_gene_layers or id(param) not in gene_weights)
        (muon if to_muon else adamw).append(param)
    return muon, adamw


def build_optimizers(model: InVAE, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Create ``[Muon, AdamW]`` for the model, with every hyperparameter set explicitly.

    Muon uses ``adjust_lr_fn="match_rms_adamw"`` so that both optimizers share one learning
    rate and weight decay scale (Liu et al., 2025, "Muon is Scalable for LLM Training").

    Args:
        model: The inVAE module.
        cfg: Learning rate and the ``optimizer`` section of the training config.

    Returns:
        The two optimizers; step both after each backward pass.
    """
    opt = cfg.optimizer
    muon_params, adamw_params = split_parameters(model, opt.muon_gene_layers)
    muon = torch.optim.Muon(
        muon_params,
        lr=cfg.learning_rate,
        weight_decay=opt.muon_weight_decay,
        momentum=opt.muon_momentum,
        nesterov=True,
        adjust_lr_fn="match_rms_adamw",
    )
    adamw = torch.optim.AdamW(
        adamw_params,
        lr=cfg.learning_rate,
        betas=opt.adamw_betas,
        weight_decay=opt.adamw_weight_decay,
        foreach=True,
    )
    return [muon, adamw]


def model_summary(model: InVAE, optimizers: list[torch.optim.Optimizer]) -> dict:
    """Describe the model: parameter counts in total and per optimizer, and layer shapes."""
    per_optimizer = {
        type(o).__name__: sum(p.numel() for g in o.param_groups for p in g["params"])
        for o in optimizers
    }
    return {
        "n_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "n_params_per_optimizer": per_optimizer,
        "layers": {
            name: list(module.weight.shape)
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear)
        },
        "config": {
            "z_i_dim": model.cfg.z_i_dim,
            "z_s_dim": model.cfg.z_s_dim,
            "hidden": list(model.cfg.hidden),
        },
    }
