"""Determinism on a CUDA device, with the training step replayed from a CUDA graph.

Skipped without a GPU. Run on a GPU machine with: pytest tests/test_gpu.py
"""

import dataclasses
import time

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
    assert other.fingerprint.weights != first.fingerprint.weights


def test_tf32_matmuls_repeat_bit_for_bit_and_change_the_bits(gpu_config, tiny_data):
    tf32 = dataclasses.replace(gpu_config, cuda_matmul_precision="tf32")
    first, again = train(tf32, tiny_data), train(tf32, tiny_data)
    assert first.seeding["fp32_precision"]["cuda.matmul"] == "tf32"
    assert first.fingerprint == again.fingerprint
    ieee = train(gpu_config, tiny_data)
    assert ieee.seeding["fp32_precision"]["cuda.matmul"] == "ieee"
    assert ieee.fingerprint.weights != first.fingerprint.weights


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


def train_on_one_host(configs, data, checkpoint_every=0, groups=None, warm=None):
    """Train every config at once on one ``TrainingHost``; their results by key.

    ``warm``: configs whose groups the host warms up first (compiled and captured before any
    training starts).
    """
    from trainables.host import TrainingHost

    host = TrainingHost(slots=len(configs), data=data)
    if warm:
        host.warm_up(warm)
        deadline = time.monotonic() + 300
        while not host._runners and time.monotonic() < deadline:
            time.sleep(0.05)
        assert host._runners[0].group._graph is not None  # captured before its trials
    for key, c in configs.items():
        assert host.start(key, c, None, checkpoint_every=checkpoint_every)
    results = {}
    while len(results) < len(configs):
        for key in set(configs) - set(results):
            for item in host.take(key, timeout=0.1):
                if item[0] != "epoch":
                    assert item[0] == "done", item
                    results[key] = item[1]
    if groups is not None:
        assert len(host._runners) == groups
    return results


@pytest.mark.parametrize("graphs", [True, False])
def test_trainings_side_by_side_in_one_process_keep_their_bits(gpu_config, tiny_data, graphs):
    """Eight trainings in one group of 16 on one GPU (other seeds, rates, slots) end as alone."""
    cfg = dataclasses.replace(gpu_config, cuda_graphs=graphs, n_epochs=6, group_width=16)
    rates = (1e-3, 3e-3)
    configs = {
        f"t{i}": dataclasses.replace(cfg, seed=i % 3, learning_rate=rates[i % 2]) for i in range(8)
    }
    results = train_on_one_host(configs, tiny_data, checkpoint_every=3)
    for seed in range(3):
        for rate in rates:
            alone = train(dataclasses.replace(cfg, seed=seed, learning_rate=rate), tiny_data)
            for key, c in configs.items():
                if (c.seed, c.learning_rate) == (seed, rate):
                    assert results[key].fingerprint == alone.fingerprint, key
            assert alone.train_config.group_width == 16


def test_groups_training_side_by_side_on_their_streams_keep_their_bits(gpu_config, tiny_data):
    """Three groups of one process (two shapes, one beyond a group's width) replay at once."""
    cfg = dataclasses.replace(gpu_config, n_epochs=6, group_width=4)
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, hidden=(24, 24)))
    configs = {f"s{i}": dataclasses.replace(cfg, seed=i % 3) for i in range(6)}
    configs |= {"w0": wider, "w1": dataclasses.replace(wider, seed=7, n_epochs=4)}
    results = train_on_one_host(configs, tiny_data, groups=3)
    for key, c in configs.items():
        assert results[key].fingerprint == train(c, tiny_data).fingerprint, key


def test_trials_joining_a_group_warmed_up_before_them_keep_their_bits(gpu_config, tiny_data):
    cfg = dataclasses.replace(gpu_config, n_epochs=6, group_width=4)
    configs = {f"t{i}": dataclasses.replace(cfg, seed=i) for i in range(3)}
    warm = [dataclasses.replace(cfg, seed=11, learning_rate=4e-3)]
    results = train_on_one_host(configs, tiny_data, groups=1, warm=warm)
    for key, c in configs.items():
        assert results[key].fingerprint == train(c, tiny_data).fingerprint, key


def test_a_checkpoint_taken_beside_other_trainings_resumes_bit_for_bit(gpu_config, tiny_data):
    from trainables.host import TrainingHost

    cfg = dataclasses.replace(gpu_config, n_epochs=6, group_width=16)
    host = TrainingHost(slots=4, data=tiny_data)
    for i in range(4):
        seed = cfg.seed + i  # t0 is cfg
        host.start(f"t{i}", dataclasses.replace(cfg, seed=seed), None, checkpoint_every=3)
    states = []
    while not states:
        states = [it[2] for it in host.take("t0") if it[0] == "epoch" and it[2] is not None]
    resumed = train(cfg, tiny_data, resume=states[0])
    assert resumed.fingerprint == train(cfg, tiny_data).fingerprint
