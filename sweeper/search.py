"""The sweep file's ``search`` block: distributions checked against the configs, Tune domains.

A search key is a train config key (``learning_rate``, ``model.z_i_dim``) or ``data.`` plus a
data config key. Each gets one distribution; every value it can draw must be one the config
accepts, checked before Ray starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainables.config import DataConfig, TrainConfig
from trainables.schema import (
    ConfigError,
    config_from_dict,
    config_keys,
    config_to_dict,
    field_type,
    suggest,
)

if TYPE_CHECKING:
    from sweeper.spec import LoadedSweep

DATA_PREFIX = "data."  # search keys under this prefix address the data config
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
SUGGESTION = "suggestion"
"""The trial config key holding its point's place in suggestion order (TPE search)."""


def param_space(sweep: LoadedSweep) -> dict[str, Any]:
    """Build the Tune param space: the seed and searched keys as nested dicts, the replicate.

    Trials apply these values to the sweep's base configs (shipped to them separately), so the
    trial table and trial names show what varies. Seeds and replicate indices are grid axes;
    with ``constant_grid_search`` every replicate of a (hyperparameters, seed) point then gets
    exactly the same config.
    """
    from ray import tune

    space = nested_values({k: tune_domain(d) for k, d in sweep.spec.search.items()})
    space["train"]["seed"] = tune.grid_search(list(sweep.spec.seeds))
    return {**space, "replicate": tune.grid_search(list(range(sweep.spec.replicates)))}


def nested_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values by search key -> the ``train`` and ``data`` trees of a trial config."""
    train: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith(DATA_PREFIX):
            _set_leaf(data, key.removeprefix(DATA_PREFIX), value)
        else:
            _set_leaf(train, key, value)
    return {"train": train, "data": data}


def expand_trials(sweep: LoadedSweep) -> list[dict[str, Any]]:
    """Resolve the trial configs exactly as the sweep's searcher will, without starting Ray.

    Mirrors ``BasicVariantGenerator(constant_grid_search=True, random_state=searcher_seed)``:
    one shared random generator, ``num_samples`` passes over the grid.
    """
    import numpy as np
    from ray.tune.search.variant_generator import generate_variants

    rng = np.random.default_rng(sweep.spec.searcher_seed)
    space = {"config": param_space(sweep)}
    trials = []
    for _ in range(sweep.spec.num_samples):
        for _, resolved in generate_variants(space, constant_grid_search=True, random_state=rng):
            trials.append(resolved["config"])
    return trials


def searched_values(sweep: LoadedSweep, config: Mapping[str, Any]) -> dict[str, Any]:
    """The values a trial config holds for each searched key (``{"learning_rate": 3e-4}``)."""
    values = {}
    for key in sweep.spec.search:
        tree, leaf = (
            (config["data"], key.removeprefix(DATA_PREFIX))
            if key.startswith(DATA_PREFIX)
            else (config["train"], key)
        )
        for part in leaf.split("."):
            tree = tree[part]
        values[key] = tree
    return values


def tune_domain(dist: Mapping[str, Any]) -> Any:
    """Map ``{"loguniform": [1e-4, 1e-2]}`` and friends to a Tune search domain."""
    from ray import tune

    ((kind, args),) = dist.items()
    makers = {
        "grid": lambda v: tune.grid_search(list(v)),
        "choice": lambda v: tune.choice(list(v)),
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(*v),
    }
    return makers[kind](args)


def check_search(search: dict[str, Any], train: TrainConfig, data: DataConfig) -> None:
    """Check every search entry: its key, its distribution and the values it can draw."""
    train_keys = config_keys(TrainConfig)
    data_keys = [DATA_PREFIX + k for k in config_keys(DataConfig)]
    for key, dist in search.items():
        where = f"search.{key}"
        if key == "seed":
            raise ConfigError(where, "seeds are set with the top-level 'seeds' key")
        if key not in train_keys + data_keys:
            raise ConfigError(
                where, "not a train or data config key" + suggest(key, train_keys + data_keys)
            )
        cls, leaf, base = (
            (DataConfig, key.removeprefix(DATA_PREFIX), data)
            if key.startswith(DATA_PREFIX)
            else (TrainConfig, key, train)
        )
        for value in _check_distribution(where, dist, field_type(cls, leaf)):
            try:  # every listed value (or range end) must be one the config accepts
                config_from_dict(cls, config_to_dict(base), {leaf: value})
            except ConfigError as err:
                raise ConfigError(
                    where, f"value {value!r} is not allowed ({err.message})"
                ) from None


def _check_distribution(where: str, dist: Any, annotation: Any) -> list[Any]:
    """Validate one search entry; return the values to check against the config."""
    if not isinstance(dist, Mapping) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        raise ConfigError(
            where, f"got {dist!r}; allowed: one of {{{', '.join(DISTRIBUTIONS)}: ...}}"
        )
    ((kind, args),) = dist.items()
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}.{kind}", f"got {args!r}; allowed: a non-empty list")
        return args
    if not isinstance(args, list) or len(args) != 2:
        raise ConfigError(f"{where}.{kind}", f"got {args!r}; allowed: [low, high]")
    low, high = args
    numeric = all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in args
    )
    if not numeric or not low < high or (kind == "loguniform" and low <= 0):
        allowed = "0 < low < high" if kind == "loguniform" else "finite numbers with low < high"
        raise ConfigError(f"{where}.{kind}", f"got {args!r}; allowed: {allowed}")
    wanted = int if kind == "randint" else float
    if annotation not in (wanted, wanted | None):
        raise ConfigError(where, f"{kind} draws {wanted.__name__}s; this key takes {annotation}")
    if kind == "randint" and not all(isinstance(v, int) for v in args):
        raise ConfigError(f"{where}.{kind}", f"got {args!r}; allowed: integers [low, high)")
    if kind == "randint":
        return [low, high - 1]  # high is exclusive
    return [float(low), math.nextafter(float(high), -math.inf)]  # so is a uniform's


def _set_leaf(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value
