"""Where trials run: connecting to Ray, the sweep's placement, replicates pinned to nodes.

The placement (:func:`plan_placement`) is each trial's resources and GPU share, and whether a
GPU's trials train in groups on one training host (``trainables.host``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sweeper.options import DriverOptions
from sweeper.spec import LoadedSweep, SweepError
from trainables.config import PROCESS_WIDE_KEYS
from trainables.constants import TUNE_REPLICATE
from trainables.fused import MAX_GPU_GROUP_WIDTH
from trainables.seeding import determinism_env

DEFAULT_TRIALS_PER_GPU = 4
"""Trials sharing a GPU, a process each, unless the sweep says otherwise."""


@dataclass(frozen=True)
class Placement:
    """Where a sweep's trials train, planned once from the sweep and the cluster.

    In groups (``host_slots`` > 0) each GPU has one training host (``trainables.host``) that
    trains up to ``host_slots`` trials at once in groups of ``group_width``; a trial's Tune
    worker only relays, so it holds no GPU. Otherwise each trial trains in its own process
    with ``gpu_share`` of a GPU.
    """

    n_gpus: int
    gpu_share: float  # of a GPU, per trial (in groups: the share of its GPU's host)
    resources: dict[str, float] | Callable[[dict[str, Any]], Any]  # of a trial's Tune worker
    host_slots: int  # trials a GPU's host trains at once; 0: no hosts
    group_width: int | None  # the trials' train config group_width

    @property
    def in_groups(self) -> bool:
        """Whether trials train on one host per GPU."""
        return self.host_slots > 0

    @property
    def trials_at_once_per_gpu(self) -> int:
        """How many trials one GPU trains at once (in groups: of its host's slots)."""
        return trials_at_once(self.gpu_share, self.host_slots)

    def max_concurrent(self, limit: int | None) -> int | None:
        """Trials at a time: ``limit`` (None: any), never more than the GPUs can hold."""
        if self.in_groups:
            fits = max(self.n_gpus, 1) * self.host_slots
        elif self.n_gpus and self.gpu_share:
            fits = math.floor(self.n_gpus / self.gpu_share + 1e-9)
        else:
            return limit
        return min(limit or fits, fits)


def plan_placement(
    sweep: LoadedSweep, n_gpus: int, n_cpus: float | None = None, spread: bool = False
) -> Placement:
    """Plan where the trials train (``spread``: pin replicates to nodes, for audits).

    A sweep on GPUs trains a GPU's trials in groups, on one host per GPU, unless
    ``resources.one_process_per_gpu`` says otherwise, an audit pins replicates to nodes, or
    it searches a setting torch keeps per process (``PROCESS_WIDE_KEYS``). In groups a
    trial's ``group_width`` is its train config's, or :func:`group_width_for` the trials a GPU
    trains at once; a trial alone in its process keeps its config's (None: 1).

    Raises:
        SweepError: ``one_process_per_gpu: true`` with replicates pinned to nodes.
    """
    share = gpus_per_trial(sweep, n_gpus, n_cpus)
    resources = {"cpu": sweep.spec.resources.cpus_per_trial, "gpu": share}
    pinned = replicates_over_nodes(resources) if spread else None
    chosen = sweep.spec.resources.one_process_per_gpu
    per_process = any(k in PROCESS_WIDE_KEYS for k in sweep.spec.search)
    in_groups = chosen if chosen is not None else n_gpus > 0 and not pinned and not per_process
    if not in_groups:
        return Placement(n_gpus, share, pinned or resources, 0, sweep.train.group_width)
    if pinned:
        raise SweepError(
            "resources.one_process_per_gpu runs a GPU's trials in one process, so replicates "
            "cannot be pinned to nodes: audit across nodes with one process per trial"
        )
    slots = sweep.spec.resources.trials_per_gpu or sweep.train.group_width or MAX_GPU_GROUP_WIDTH
    share = gpus_per_trial(sweep, n_gpus, n_cpus, per_gpu_default=slots)
    width = sweep.train.group_width or group_width_for(trials_at_once(share, slots))
    return Placement(n_gpus, share, {**resources, "gpu": 0.0}, slots, width)


def trials_at_once(gpu_share: float, host_slots: int) -> int:
    """Trials one GPU trains at once with ``gpu_share`` each (none: all of ``host_slots``)."""
    return round(1 / gpu_share) if gpu_share else host_slots


def group_width_for(trials_at_once: int) -> int:
    """The width of a GPU's groups when it trains ``trials_at_once`` trials of one shape.

    As few groups as hold them at ``MAX_GPU_GROUP_WIDTH`` slots each, and those groups as
    narrow as hold them: a group's epoch costs about the same with its slots empty or full
    (H200: 141 ms for one trial in a group of 16, 146 ms for 16, 77 ms for 4 in a group of 4,
    55 ms alone), so 4 trials at once train in groups of 4, 24 in two groups of 12.
    """
    groups = math.ceil(trials_at_once / MAX_GPU_GROUP_WIDTH)
    return math.ceil(trials_at_once / groups)


def gpus_per_trial(
    sweep: LoadedSweep,
    n_gpus: int,
    n_cpus: float | None = None,
    per_gpu_default: int = DEFAULT_TRIALS_PER_GPU,
) -> float:
    """The GPU share of one trial, chosen so that concurrent trials spread over all GPUs.

    Ray fills GPU 0 with fractional trials before it uses GPU 1. So the share is
    ``1 / trials_per_gpu`` only while there are enough concurrent trials (trials, allowed
    concurrency and CPUs all permitting) to fill every GPU that way; with fewer, fewer trials
    share each GPU.
    """
    resources = sweep.spec.resources
    if n_gpus == 0:
        return 0.0
    if resources.gpus_per_trial is not None:
        return resources.gpus_per_trial
    limits = [sweep.spec.n_trials, sweep.spec.max_concurrent_trials or sweep.spec.n_trials]
    if n_cpus is not None:
        limits.append(max(math.floor(n_cpus / resources.cpus_per_trial), 1))
    concurrent = min(limits)
    per_gpu = min(resources.trials_per_gpu or per_gpu_default, math.ceil(concurrent / n_gpus))
    return 1.0 / max(per_gpu, 1)


def worker_env(sweep: LoadedSweep) -> dict[str, str]:
    """Environment every trial and logging actor needs, on every node (see ``connect``)."""
    env = dict(determinism_env())
    if sweep.spec.wandb.mode == "offline":
        env["WANDB_MODE"] = "offline"  # mode="offline" alone still asks for an API key
    env["WANDB_SILENT"] = "true"  # one W&B banner per trial drowns the trial table
    return env


CLOUD_CREDENTIALS = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"}
)
"""Credentials Tune would ship to every trial in its ``runtime_env``."""


def keep_credentials_out_of_runtime_envs() -> None:
    """Stop Tune from copying cloud credentials of the driver into its trials' ``runtime_env``.

    Ray's runtime-env agent writes every ``runtime_env`` it sets up, in plain text, to its log
    in Ray's session folder. Trials of a Ray started here inherit the driver's environment
    anyway; a cluster's nodes get credentials of their own (``docs/cluster.md``). Tune keeps
    the names in a private module set (``ray.tune.execution.class_cache``, Ray 2.60); the
    credential search test fails if that changes.
    """
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = frozenset(
        class_cache.ENV_VARS_TO_PROPAGATE - CLOUD_CREDENTIALS
    )


def connect(options: DriverOptions, env: dict[str, str]) -> tuple[int, float, bool]:
    """Connect to the cluster or start a local Ray.

    Returns:
        The GPUs to use, the cluster's CPUs, and whether this call started Ray.

    Raises:
        SweepError: The cluster has fewer GPUs than asked for.
    """
    import ray

    started = False
    address = options.cluster_address
    # The driver's own W&B callback reads it too, in a Ray that was already running. A Ray
    # started here passes it on to its workers, which start faster without a runtime_env
    # (~2 s per batch of worker processes on 2 cores); a cluster's nodes get it through
    # runtime_env.
    os.environ.update(env)
    if not ray.is_initialized():
        if address:
            try:
                ray.init(address=address, runtime_env={"env_vars": env})
            except ConnectionError as err:
                raise SweepError(
                    f"cannot connect to the Ray cluster at {address} ({err}); if it uses token "
                    "authentication, copy its ~/.ray/auth_token here and set RAY_AUTH_MODE=token "
                    "(docs/cluster.md)"
                ) from None
        else:
            ray.init(
                address="local",  # never join a cluster that happens to run on this machine
                num_cpus=options.cpus,
                num_gpus=options.gpus,
                include_dashboard=False,
            )
        started = True
    resources = ray.cluster_resources()
    available = int(resources.get("GPU", 0))
    if options.gpus is not None and options.gpus > available:
        if started:
            ray.shutdown()
        where = f"the cluster at {address}" if address else "this Ray instance"
        raise SweepError(f"--gpus {options.gpus} asked for, but {where} has {available} GPUs")
    n_gpus = available if options.gpus is None else options.gpus
    return n_gpus, resources.get("CPU", 1.0), started


def replicates_over_nodes(resources: dict[str, float]) -> Callable | None:
    """Per-trial resources pinning replicate ``i`` to node ``i mod n``; None on a single node.

    Only nodes that can hold a trial count. Audits use this to compare runs across nodes;
    the pin is Ray's node-id label selector on the trial's placement group.
    """
    import ray
    from ray import tune

    need = {"CPU": resources["cpu"], "GPU": resources["gpu"]}
    nodes = sorted(
        n["NodeID"]
        for n in ray.nodes()
        if n["Alive"] and all(n["Resources"].get(k, 0) >= v for k, v in need.items() if v)
    )
    if len(nodes) < 2:
        return None
    bundle = {k: v for k, v in need.items() if v}

    def pinned(config: dict[str, Any]) -> Any:
        node = nodes[int(config.get(TUNE_REPLICATE, 0)) % len(nodes)]
        return tune.PlacementGroupFactory(
            [bundle], bundle_label_selector=[{"ray.io/node-id": node}]
        )

    return pinned
