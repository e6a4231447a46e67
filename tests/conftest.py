"""Shared fixtures: a tiny simulated dataset, prepared once per session, and small configs."""

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
