"""Frozen, validated run configuration, one dataclass per concern.

A run is described by a :class:`TrainConfig` (seed, schedule, model and optimizer) and a
:class:`DataConfig` (input, preprocessing, split). Both load from YAML with
:func:`load_train_config` / :func:`load_data_config`; overrides use dotted keys
(``{"model.z_i_dim": 10}``). Every problem (unknown key, wrong type, value out of range) raises
one :class:`ConfigError` that names the key path, the value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainables.schema import config_from_dict, read_yaml, require

SIMULATED = "simulated"
"""``data_path`` value that selects the built-in simulated dataset."""


@dataclass(frozen=True)
class SimulationConfig:
    """Shape and generative parameters of the built-in Splatter-style simulated dataset.

    The defaults give the shape of the scIB human pancreas benchmark (16,382 cells,
    19,093 genes, 9 batches, 14 cell types).
    """

    n_cells: int = 16382
    n_genes: int = 19093
    n_batches: int = 9
    n_cell_types: int = 14
    seed: int = 0
    mean_shape: float = 0.6  # gene means ~ Gamma(shape, rate)
    mean_rate: float = 0.3
    lib_loc: float = 8.0  # log library size ~ Normal(loc, scale): ~3,000 counts per cell
    lib_scale: float = 0.4
    de_prob: float = 0.1  # per cell type, fraction of genes differentially expressed
    de_loc: float = 0.6  # log DE factor ~ Normal(loc, scale)
    de_scale: float = 0.4
    batch_loc: float = 0.1  # log batch factor ~ Normal(loc, scale), per batch and gene
    batch_scale: float = 0.2
    bcv_common: float = 0.2  # biological coefficient of variation
    bcv_df: float = 60.0

    def __post_init__(self):
        require(self.n_cells >= 2, "n_cells", self.n_cells, "an integer >= 2")
        for key in ("n_genes", "n_batches", "n_cell_types"):
            require(getattr(self, key) >= 1, key, getattr(self, key), "an integer >= 1")
        require(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        for key in ("mean_shape", "mean_rate", "bcv_df"):
            require(getattr(self, key) > 0, key, getattr(self, key), "a number > 0")
        for key in ("lib_scale", "de_scale", "batch_scale", "bcv_common"):
            require(getattr(self, key) >= 0, key, getattr(self, key), "a number >= 0")
        require(0 <= self.de_prob <= 1, "de_prob", self.de_prob, "a number in [0, 1]")


@dataclass(frozen=True)
class DataConfig:
    """Where the counts come from and how they are turned into training tensors."""

    data_path: str = SIMULATED  # an .h5ad path, a named dataset, or "simulated"
    counts_layer: str | None = None  # None: counts are in X
    bio_keys: tuple[str, ...] = ("celltype",)  # obs columns of the biological covariates
    tech_keys: tuple[str, ...] = ("tech",)  # obs columns of the technical covariates
    n_top_genes: int = 4000
    val_size: float = 0.2
    random_state: int = 42
    cache_dir: str | None = None  # None: $INVAE_SWEEP_CACHE or ~/.cache/invae-sweep
    download: bool = False  # allow fetching a named dataset from its public URL
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    def __post_init__(self):
        require(bool(self.data_path), "data_path", self.data_path, "a non-empty path or name")
        for key in ("bio_keys", "tech_keys"):
            keys = getattr(self, key)
            require(all(keys), key, keys, "a list of non-empty obs column names")
        require(self.n_top_genes >= 1, "n_top_genes", self.n_top_genes, "an integer >= 1")
        require(0 < self.val_size < 1, "val_size", self.val_size, "a number in (0, 1)")
        require(self.random_state >= 0, "random_state", self.random_state, "an integer >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the inVAE module (sizes only: no batch size, device or schedule)."""

    z_i_dim: int = 30  # invariant (biological) latent dimensions
    z_s_dim: int = 5  # spurious (technical) latent dimensions
    hidden: tuple[int, ...] = (128, 128)
    dropout: float = 0.1
    batch_norm: bool = True
    prior_mean: Literal["zero", "learned"] = "zero"
    inject_covariates: bool = False  # the decoder also reads the technical covariates

    def __post_init__(self):
        require(self.z_i_dim >= 1, "z_i_dim", self.z_i_dim, "an integer >= 1")
        require(self.z_s_dim >= 1, "z_s_dim", self.z_s_dim, "an integer >= 1")
        require(
            len(self.hidden) >= 1 and min(self.hidden) >= 1,
            "hidden",
            list(self.hidden),
            "a non-empty list of integers >= 1",
        )
        require(0 <= self.dropout < 1, "dropout", self.dropout, "a number in [0, 1)")


@dataclass(frozen=True)
class OptimizerConfig:
    """The Muon + AdamW split: Muon for hidden weight matrices, AdamW for everything else."""

    muon_weight_decay: float = 0.01  # set explicitly: torch's Muon defaults to 0.1
    muon_momentum: float = 0.95
    muon_gene_layers: bool = False  # also use Muon for the gene-wide input/output matrices
    adamw_weight_decay: float = 0.01
    adamw_betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self):
        for key in ("muon_weight_decay", "adamw_weight_decay"):
            require(getattr(self, key) >= 0, key, getattr(self, key), "a number >= 0")
        require(0 <= self.muon_momentum < 1, "muon_momentum", self.muon_momentum, "[0, 1)")
        require(
            all(0 <= b < 1 for b in self.adamw_betas),
            "adamw_betas",
            list(self.adamw_betas),
            "two numbers in [0, 1)",
        )


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


CudaMatmulPrecision = Literal["ieee", "tf32"]
"""Float32 matmuls on CUDA: IEEE float32, or TF32 tensor cores (``trainables.seeding``)."""

PROCESS_WIDE_KEYS = ("deterministic", "cpu_threads", "cuda_matmul_precision")
"""TrainConfig keys that torch keeps per process: trainings sharing a process must agree."""


@dataclass(frozen=True)
class TrainConfig:
    """Seed, determinism, schedule and loss weights of one training run.

    ``group_width``: the slots of the batched computation the run trains in
    (``trainables.fused``); its bits depend on it. None trains alone at width 1; a sweep that
    trains a GPU's trials in groups sets it from the trials a GPU trains at once (at most
    ``MAX_GPU_GROUP_WIDTH``, 16; ``sweeper.cluster.group_width_for``) and records it.
    """

    seed: int = 42
    deterministic: bool = True
    n_epochs: int = 500
    batch_size: int = 256
    learning_rate: float = 1e-3
    beta_start: float = 0.4  # KL weight, warmed up linearly per optimizer step
    beta_end: float = 1.0
    beta_warmup_steps: int = 250
    indep_weight: float = 0.1  # weight of ||Cov(z_i, z_s)||_F^2
    grad_clip: float | None = 1.0  # max global gradient norm; None disables clipping
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    cpu_threads: int = 1  # torch CPU threads; results differ between thread counts
    cuda_matmul_precision: CudaMatmulPrecision = "ieee"  # tf32: faster, other bits
    cuda_graphs: bool = True  # on a GPU, replay each epoch of steps from one CUDA graph
    compile: bool = True  # on a GPU, fuse the loss's kernels with torch.compile
    cpu_compile: bool = False  # on the CPU too (configs/train_config.yaml); needs a C++ compiler
    group_width: int | None = None  # slots of the batched computation (see above)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)

    def __post_init__(self):
        require(0 <= self.seed < 2**32, "seed", self.seed, "an integer in [0, 2**32)")
        require(self.n_epochs >= 1, "n_epochs", self.n_epochs, "an integer >= 1")
        # BatchNorm needs at least two cells per minibatch.
        require(self.batch_size >= 2, "batch_size", self.batch_size, "an integer >= 2")
        require(self.learning_rate > 0, "learning_rate", self.learning_rate, "a number > 0")
        for key in ("beta_start", "beta_end", "indep_weight"):
            require(getattr(self, key) >= 0, key, getattr(self, key), "a number >= 0")
        require(
            self.beta_warmup_steps >= 0,
            "beta_warmup_steps",
            self.beta_warmup_steps,
            "an integer >= 0",
        )
        require(
            self.grad_clip is None or self.grad_clip > 0,
            "grad_clip",
            self.grad_clip,
            "a number > 0, or null to disable clipping",
        )
        require(
            bool(_DEVICE.fullmatch(self.device)),
            "device",
            self.device,
            "auto, cpu, cuda or cuda:N",
        )
        require(self.cpu_threads >= 1, "cpu_threads", self.cpu_threads, "an integer >= 1")
        require(
            self.group_width is None or self.group_width >= 1,
            "group_width",
            self.group_width,
            "an integer >= 1, or null (1 alone; a sweep's groups set it)",
        )


# --- loading -------------------------------------------------------------------------------


def load_train_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Load a :class:`TrainConfig` from YAML (defaults when ``path`` is None), then apply overrides.

    Args:
        path: A YAML file such as ``configs/train_config.yaml``.
        overrides: Values that replace the file's, by dotted key (``{"model.z_i_dim": 10}``).

    Returns:
        The validated, frozen config.

    Raises:
        ConfigError: The file is missing or invalid, or a key or value is not allowed.
    """
    return config_from_dict(
        TrainConfig, read_yaml(path), overrides, (None if path is None else str(path))
    )


def load_data_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> DataConfig:
    """Load a :class:`DataConfig` from YAML (defaults when ``path`` is None), then apply overrides.

    Args:
        path: A YAML file such as ``configs/data_config.yaml``.
        overrides: Values that replace the file's, by dotted key (``{"n_top_genes": 2000}``).

    Returns:
        The validated, frozen config.

    Raises:
        ConfigError: The file is missing or invalid, or a key or value is not allowed.
    """
    return config_from_dict(
        DataConfig, read_yaml(path), overrides, (None if path is None else str(path))
    )
