"""Where trials run: connecting to Ray, each trial's GPU share, replicates pinned to nodes."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from sweeper.options import DriverOptions
from sweeper.spec import LoadedSweep, SweepError
from trainables.constants import TUNE_REPLICATE
from trainables.seeding import determinism_env

DEFAULT_TRIALS_PER_GPU = 4


def gpus_per_trial(sweep: LoadedSweep, n_gpus: int, n_cpus: float | None = None) -> float:
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
    per_gpu = min(
        resources.trials_per_gpu or DEFAULT_TRIALS_PER_GPU, math.ceil(concurrent / n_gpus)
    )
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
    address = options.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        # A Ray started here passes this environment on to its workers, which start faster
        # without a runtime_env (~2 s per batch of worker processes on 2 cores); a cluster's
        # nodes get it through runtime_env.
        os.environ.update(env)
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


def start_training_hosts(n_gpus: int, slots: int, data: Any) -> list[Any]:
    """One ``RayTrainingHost`` actor per GPU (one in all without GPUs), ``slots`` trainings each.

    Ray places each host on a GPU of its own, on whichever node has one. A host that dies is
    restarted by Ray; its trials fail and are retried like any failed trial.

    Args:
        n_gpus: GPUs of the sweep.
        slots: Trials one host trains at once.
        data: Data shared by every trial (an object reference to a ``PreparedData``), or
            None. Keep the reference while the hosts live: a restarted host reads it again.
    """
    import ray

    from trainables.ray_trainable import RayTrainingHost

    actor = ray.remote(RayTrainingHost).options(
        num_cpus=0,  # the trials' own CPUs are reserved by their (waiting) Tune workers
        num_gpus=1 if n_gpus else 0,
        max_concurrency=2 * slots + 4,  # each trial waits in take() on one thread
        max_restarts=-1,
    )
    return [actor.remote(slots, data) for _ in range(max(n_gpus, 1))]
