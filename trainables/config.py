"""Frozen, validated run configuration, one dataclass per concern.

A run is described by a :class:`TrainConfig` (seed, schedule, model and optimizer) and a
:class:`DataConfig` (input, preprocessing, split). Both load from YAML with
:func:`load_train_config` / :func:`load_data_config`; overrides use dotted keys
(``{"model.z_i_dim": 10}``). Every problem (unknown key, wrong type, value out of range) raises
one :class:`ConfigError` that names the key path, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

SIMULATED = "simulated"
"""``data_path`` value that selects the built-in simulated dataset."""


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range.

    Attributes:
        key: Dotted path of the offending key (``"model.z_i_dim"``), or ``""`` for the whole file.
        message: What is wrong and what is allowed.
        source: The file the value came from, if any.
    """

    def __init__(self, key: str, message: str, source: str | None = None):
        self.key, self.message, self.source = key, message, source
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)

    def under(self, prefix: str) -> ConfigError:
        """Return the same error with ``prefix`` prepended to its key path."""
        return ConfigError(_join(prefix, self.key), self.message, self.source)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, f"got {value!r}; allowed: {allowed}")


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
        _require(self.n_cells >= 2, "n_cells", self.n_cells, "an integer >= 2")
        for key in ("n_genes", "n_batches", "n_cell_types"):
            _require(getattr(self, key) >= 1, key, getattr(self, key), "an integer >= 1")
        _require(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        for key in ("mean_shape", "mean_rate", "bcv_df"):
            _require(getattr(self, key) > 0, key, getattr(self, key), "a number > 0")
        for key in ("lib_scale", "de_scale", "batch_scale", "bcv_common"):
            _require(getattr(self, key) >= 0, key, getattr(self, key), "a number >= 0")
        _require(0 <= self.de_prob <= 1, "de_prob", self.de_prob, "a number in [0, 1]")


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
        _require(bool(self.data_path), "data_path", self.data_path, "a non-empty path or name")
        for key in ("bio_keys", "tech_keys"):
            keys = getattr(self, key)
            _require(all(keys), key, keys, "a list of non-empty obs column names")
        _require(self.n_top_genes >= 1, "n_top_genes", self.n_top_genes, "an integer >= 1")
        _require(0 < self.val_size < 1, "val_size", self.val_size, "a number in (0, 1)")
        _require(self.random_state >= 0, "random_state", self.random_state, "an integer >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the inVAE module (sizes only: no batch size, device or schedule)."""

    z_i_dim: int = 30  # invariant (biological) latent dimensions
    z_s_dim: int = 5  # spurious (technical) latent dimensions
    hidden: tuple[int, ...] = (128, 128)
    dropout: float = 0.1
    batch_norm: bool = True
    prior_mean: Literal["zero", "learned"] = "zero"

    def __post_init__(self):
        _require(self.z_i_dim >= 1, "z_i_dim", self.z_i_dim, "an integer >= 1")
        _require(self.z_s_dim >= 1, "z_s_dim", self.z_s_dim, "an integer >= 1")
        _require(
            len(self.hidden) >= 1 and min(self.hidden) >= 1,
            "hidden",
            list(self.hidden),
            "a non-empty list of integers >= 1",
        )
        _require(0 <= self.dropout < 1, "dropout", self.dropout, "a number in [0, 1)")


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
            _require(getattr(self, key) >= 0, key, getattr(self, key), "a number >= 0")
        _require(0 <= self.muon_momentum < 1, "muon_momentum", self.muon_momentum, "[0, 1)")
        _require(
            all(0 <= b < 1 for b in self.adamw_betas),
            "adamw_betas",
            list(self.adamw_betas),
            "two numbers in [0, 1)",
        )


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class TrainConfig:
    """Seed, determinism, schedule and loss weights of one training run."""

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
    cuda_graphs: bool = True  # on a GPU, replay each training step from a CUDA graph
    compile: bool = True  # on a GPU, fuse the loss's kernels with torch.compile
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)

    def __post_init__(self):
        _require(0 <= self.seed < 2**32, "seed", self.seed, "an integer in [0, 2**32)")
        _require(self.n_epochs >= 1, "n_epochs", self.n_epochs, "an integer >= 1")
        # BatchNorm needs at least two cells per minibatch.
        _require(self.batch_size >= 2, "batch_size", self.batch_size, "an integer >= 2")
        _require(self.learning_rate > 0, "learning_rate", self.learning_rate, "a number > 0")
        for key in ("beta_start", "beta_end", "indep_weight"):
            _require(getattr(self, key) >= 0, key, getattr(self, key), "a number >= 0")
        _require(
            self.beta_warmup_steps >= 0,
            "beta_warmup_steps",
            self.beta_warmup_steps,
            "an integer >= 0",
        )
        _require(
            self.grad_clip is None or self.grad_clip > 0,
            "grad_clip",
            self.grad_clip,
            "a number > 0, or null to disable clipping",
        )
        _require(
            bool(_DEVICE.fullmatch(self.device)),
            "device",
            self.device,
            "auto, cpu, cuda or cuda:N",
        )
        _require(self.cpu_threads >= 1, "cpu_threads", self.cpu_threads, "an integer >= 1")


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
    return config_from_dict(TrainConfig, _read_yaml(path), overrides, _source(path))


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
    return config_from_dict(DataConfig, _read_yaml(path), overrides, _source(path))


def config_from_dict(
    cls: type[T],
    raw: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> T:
    """Build and validate a config dataclass from a nested dict plus dotted-key overrides.

    Args:
        cls: The config class (:class:`TrainConfig`, :class:`DataConfig`, ...).
        raw: Nested values, as read from YAML; missing keys take the defaults.
        overrides: Dotted keys whose values replace those in ``raw``.
        source: Where ``raw`` came from, for error messages.

    Returns:
        The validated config.

    Raises:
        ConfigError: A key is unknown or a value has the wrong type or is out of range.
    """
    try:
        merged = apply_overrides(raw, overrides or {})
        return _build(cls, merged, "")
    except ConfigError as err:
        raise ConfigError(err.key, err.message, source) from None


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``raw`` with each dotted-key override set in it."""
    merged = _deep_copy(raw)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = merged
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                key = ".".join(parents[: depth + 1])
                raise ConfigError(key, f"is {child!r}, so it has no key {dotted!r}")
            node = child
        node[leaf] = value
    return merged


def config_to_dict(config: Any) -> dict[str, Any]:
    """Return a config as plain nested dicts and lists, ready for JSON or YAML."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def flatten_dict(tree: Mapping[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into ``{"model.z_i_dim": 30, ...}`` (the inverse of overrides)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat |= flatten_dict(value, sep, name)
        else:
            flat[name] = value
    return flat


def config_keys(cls: type) -> list[str]:
    """List the dotted paths of every leaf field of a config class (``"model.z_i_dim"``, ...)."""
    keys = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += [f"{f.name}.{sub}" for sub in config_keys(hints[f.name])]
        else:
            keys.append(f.name)
    return keys


def field_type(cls: type, dotted: str) -> Any:
    """Return the annotation of a dotted leaf key of a config class (``"model.z_i_dim"``: int).

    Raises:
        KeyError: No such key.
    """
    head, _, rest = dotted.partition(".")
    hints = get_type_hints(cls)
    if head not in hints:
        raise KeyError(dotted)
    if rest:
        if not dataclasses.is_dataclass(hints[head]):
            raise KeyError(dotted)
        return field_type(hints[head], rest)
    return hints[head]


def suggest(key: str, choices: list[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# --- internals -----------------------------------------------------------------------------


def _source(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def _read_yaml(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError("", "file not found", str(path)) from None
    except yaml.YAMLError as err:
        raise ConfigError("", f"invalid YAML: {err}", str(path)) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("", f"expected a mapping of keys, got {type(raw).__name__}", str(path))
    return raw


def _deep_copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def _build(cls: type[T], raw: Any, where: str) -> T:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"expected a mapping, got {raw!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(_join(where, str(key)), "unknown key" + suggest(str(key), names))
        values[key] = _coerce(hints[key], value, _join(where, key))
    try:
        return cls(**values)
    except ConfigError as err:
        raise err.under(where) from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"got {value!r}; allowed: {', '.join(map(str, args))}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return _deep_copy(value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {value!r}")
        if args[-1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(key, f"expected a list of {len(args)} values, got {value!r}")
        return tuple(
            _coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    return _coerce_scalar(tp, value, key)


def _coerce_scalar(tp: type, value: Any, key: str) -> Any:
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and not isinstance(value, bool):
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    if tp is str and isinstance(value, str):
        return value
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    raise ConfigError(key, f"expected {names[tp]}, got {value!r}")
