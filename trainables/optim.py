"""The Muon + AdamW split: Muon for hidden weight matrices, AdamW for everything else."""

from __future__ import annotations

from torch import nn

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


def model_summary(model: InVAE, muon_names: list[str]) -> dict:
    """Describe the model: parameter counts in total and per optimizer, and layer shapes.

    Args:
        model: The inVAE module.
        muon_names: The names of the parameters Muon steps; AdamW steps the others.
    """
    params = dict(model.named_parameters())
    n_muon = sum(params[n].numel() for n in muon_names)
    n_params = sum(p.numel() for p in params.values() if p.requires_grad)
    return {
        "n_params": n_params,
        "n_params_per_optimizer": {"Muon": n_muon, "AdamW": n_params - n_muon},
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
