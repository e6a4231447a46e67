"""Determinism on a CUDA device, with the training step replayed from a CUDA graph.

Skipped without a GPU. Run on a GPU machine with: pytest tests/test_gpu.py
"""

import dataclasses

import pytest
import torch

from trainables.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def gpu_config(tiny_train_config):
    return dataclasses.replace(tiny_train_config, device="cuda", n_epochs=4, batch_size=32)


def test_replicates_on_the_gpu_are_bit_for_bit_identical(gpu_config, tiny_data):
    first, again = train(gpu_config, tiny_data), train(gpu_config, tiny_data)
    assert first.model_info["device"].startswith("cuda")
    assert first.fingerprint == again.fingerprint
    other = train(dataclasses.replace(gpu_config, seed=gpu_config.seed + 1), tiny_data)
    assert other.fingerprint["weights"] != first.fingerprint["weights"]


@pytest.mark.parametrize("graphs", [True, False])
def test_resume_on_the_gpu_ends_bit_for_bit(gpu_config, tiny_data, graphs):
    cfg = dataclasses.replace(gpu_config, cuda_graphs=graphs)
    uninterrupted = train(cfg, tiny_data)
    states = []
    train(cfg, tiny_data, report=lambda row, state=None: states.append(state), checkpoint_every=2)
    resumed = train(cfg, tiny_data, resume=states[1])
    assert resumed.fingerprint == uninterrupted.fingerprint


def test_non_deterministic_mode_runs(gpu_config, tiny_data):
    result = train(dataclasses.replace(gpu_config, deterministic=False), tiny_data)
    assert result.seeding["deterministic"] is False and len(result.history) == 4


def test_later_trials_in_one_process_need_no_more_gpu_memory(gpu_config, tiny_data):
    """Ray reuses a worker for trial after trial; each must not add cuBLAS workspaces."""
    train(gpu_config, tiny_data)
    peaks = []
    for _ in range(3):
        torch.cuda.reset_peak_memory_stats()
        train(gpu_config, tiny_data)
        peaks.append(torch.cuda.max_memory_allocated())
    assert peaks[2] <= peaks[0]
