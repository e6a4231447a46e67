"""Shared fixtures: a tiny simulated dataset, prepared once per session, and small configs."""

import os

import pytest

from trainables.config import DataConfig, ModelConfig, SimulationConfig, TrainConfig

TINY_SIMULATION = SimulationConfig(n_cells=300, n_genes=120, n_batches=2, n_cell_types=3)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("invae-cache"))


@pytest.fixture(scope="session")
def tiny_data_config(cache_dir):
    return DataConfig(simulation=TINY_SIMULATION, n_top_genes=60, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def tiny_data(tiny_data_config):
    from trainables.data import prepare_data

    return prepare_data(tiny_data_config)


@pytest.fixture
def tiny_train_config():
    return TrainConfig(
        n_epochs=3,
        batch_size=64,
        device="cpu",
        beta_warmup_steps=5,
        model=ModelConfig(z_i_dim=4, z_s_dim=2, hidden=(16, 16)),
    )


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    """The environment Ray workers started from this process inherit: offline W&B, a cache."""
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "INVAE_SWEEP_CACHE": str(tmp_path_factory.mktemp("ray-cache")),
    }
    # Local workers inherit the driver's environment. Only these keys are put back afterwards:
    # restoring the whole environment would also take away what Ray set in it (its
    # RAY_AUTH_MODE), and a Ray started later in this process then cancels every actor.
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def ray_session(ray_env):
    """One Ray instance per test module: 2 CPUs and 4 fake GPUs (trials then run on the CPU)."""
    import ray

    # address="local": a new instance even if another Ray runs on this machine
    ray.init(address="local", num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
