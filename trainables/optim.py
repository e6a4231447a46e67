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

    Muon takes the weight matrices of the hidden layers (``InVAE.hidden_layers``), plus the
    gene-wide input and output matrices when ``muon_gene_layers`` is set. AdamW takes the rest:
    biases, BatchNorm, the gene-wise dispersion, input layers and distribution heads.

    Args:
        model: The inVAE module.
        muon_gene_layers: Whether Muon also takes the gene-wide weight matrices.

    Returns:
        ``(muon_params, adamw_params)``, each in ``model.parameters()`` order.
    """
    layers = model.hidden_layers() + (model.gene_layers() if muon_gene_layers else [])
    to_muon = {id(layer.weight) for layer in layers}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) in to_muon], [p for p in params if id(p) not in to_muon]


def build_optimizers(model: InVAE, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Create one Muon per Muon matrix, then AdamW; hyperparameters explicit.

    Muon updates each matrix on its own (momentum, then a Newton-Schulz iteration of some 30
    small kernels), so one optimizer per matrix computes what a single Muon over all of them
    would, bit for bit, and lets a GPU run the matrices' iterations side by side (see
    ``trainables.step``). Muon uses ``adjust_lr_fn="match_rms_adamw"`` so that both kinds share
    one learning rate and weight decay scale (Liu et al., 2025, "Muon is Scalable for LLM
    Training"). On a GPU, AdamW is the fused, capturable implementation (one kernel, CUDA-graph
    safe).

    Args:
        model: The inVAE module, already on its device.
        cfg: Learning rate and the ``optimizer`` section of the training config.

    Returns:
        ``[Muon, ..., Muon, AdamW]`` (no Muon without hidden layers); step all of them after
        each backward pass.
    """
    opt = cfg.optimizer
    muon_params, adamw_params = split_parameters(model, opt.muon_gene_layers)
    on_cuda = next(model.parameters()).device.type == "cuda"
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.Muon(
            [param],
            lr=cfg.learning_rate,
            weight_decay=opt.muon_weight_decay,
            momentum=opt.muon_momentum,
            nesterov=True,
            adjust_lr_fn="match_rms_adamw",
        )
        for param in muon_params
    ]
    optimizers.append(
        torch.optim.AdamW(
            adamw_params,
            lr=cfg.learning_rate,
            betas=opt.adamw_betas,
            weight_decay=opt.adamw_weight_decay,
            **({"fused": True, "capturable": True} if on_cuda else {"foreach": True}),
        )
    )
    return optimizers


def model_summary(model: InVAE, optimizers: list[torch.optim.Optimizer]) -> dict:
    """Describe the model: parameter counts in total and per optimizer, and layer shapes."""
    per_optimizer: dict[str, int] = {}
    for o in optimizers:
        n = sum(p.numel() for g in o.param_groups for p in g["params"])
        per_optimizer[type(o).__name__] = per_optimizer.get(type(o).__name__, 0) + n
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
