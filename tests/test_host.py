"""Several trainings in one process (``TrainingHost``): each ends with the bits it has alone."""

import dataclasses
import time

import pytest

from trainables.host import TrainingHost
from trainables.train import NonFiniteLossError, train


def collect(host, key):
    """Take a training's items until it ends; return (epoch rows, final item)."""
    rows = []
    while True:
        for item in host.take(key, timeout=60):
            if item[0] == "epoch":
                rows.append(item[1])
            else:
                return rows, item


def test_trainings_side_by_side_end_with_the_bits_they_have_alone(tiny_train_config, tiny_data):
    configs = {
        "a": tiny_train_config,
        "b": dataclasses.replace(tiny_train_config, seed=1),
        "c": tiny_train_config,  # a replicate of "a", running at the same time
    }
    host = TrainingHost(slots=3, data=tiny_data)
    for key, cfg in configs.items():
        assert host.start(key, cfg, None, checkpoint_every=2)
    assert host.running() == 3
    ends = {key: collect(host, key) for key in configs}
    for key, cfg in configs.items():
        rows, (kind, result) = ends[key]
        assert kind == "done"
        assert [row["epoch"] for row in rows] == [1, 2, 3]
        assert result.fingerprint == train(cfg, tiny_data).fingerprint, key
    assert ends["a"][1][1].fingerprint != ends["b"][1][1].fingerprint
    assert host.running() == 0


def test_a_checkpoint_from_a_host_resumes_bit_for_bit(tiny_train_config, tiny_data):
    host = TrainingHost(slots=2, data=tiny_data)
    host.start("first", tiny_train_config, None, checkpoint_every=2)
    host.start("other", dataclasses.replace(tiny_train_config, seed=5), None)
    states = []
    while not states:
        states = [item[2] for item in host.take("first") if item[0] == "epoch" and item[2]]
    host.cancel("first")
    host.start("resumed", tiny_train_config, None, resume=states[0])
    _, (kind, resumed) = collect(host, "resumed")
    assert kind == "done"
    assert resumed.fingerprint == train(tiny_train_config, tiny_data).fingerprint
    collect(host, "other")


def test_a_failing_training_fails_alone(tiny_train_config, tiny_data):
    host = TrainingHost(slots=2, data=tiny_data)
    bad = dataclasses.replace(tiny_train_config, learning_rate=1e12, grad_clip=None)
    host.start("bad", bad, None)
    host.start("good", tiny_train_config, None)
    _, (kind, err) = collect(host, "bad")
    assert kind == "failed" and isinstance(err, NonFiniteLossError)
    assert "non-finite loss" in str(err)
    _, (kind, _) = collect(host, "good")
    assert kind == "done"


def test_a_full_host_says_so_and_other_process_settings_are_refused(tiny_train_config, tiny_data):
    host = TrainingHost(slots=1, data=tiny_data)
    long = dataclasses.replace(tiny_train_config, n_epochs=50)
    assert host.start("one", long, None)
    assert not host.start("two", tiny_train_config, None)  # full
    host2 = TrainingHost(slots=2, data=tiny_data)
    host2.start("one", long, None)
    for other in ({"deterministic": False}, {"cuda_matmul_precision": "tf32"}):
        with pytest.raises(ValueError, match="must share deterministic, cpu_threads, cuda_matmul"):
            host2.start("other", dataclasses.replace(tiny_train_config, **other), None)
    with pytest.raises(ValueError, match="already on this host"):
        host2.start("one", long, None)
    for h in (host, host2):
        h.cancel("one")
    deadline = time.monotonic() + 60
    while (host.running() or host2.running()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host.running() == host2.running() == 0  # cancelled trainings stop at their next epoch
    with pytest.raises(KeyError):
        host.take("one", timeout=0)


def test_a_training_nobody_takes_from_is_stopped(tiny_train_config, tiny_data):
    host = TrainingHost(slots=1, data=tiny_data, orphan_after_s=0.0)
    host.start("orphan", dataclasses.replace(tiny_train_config, n_epochs=50), None)
    deadline = time.monotonic() + 60
    while host.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host.running() == 0


def test_trainings_of_one_shape_train_in_one_group_keeping_their_bits(tiny_train_config, tiny_data):
    cfg = dataclasses.replace(tiny_train_config, group_width=4)
    configs = {"a": cfg, "b": dataclasses.replace(cfg, seed=3, learning_rate=2e-3), "c": cfg}
    host = TrainingHost(slots=4, data=tiny_data)
    for key, c in configs.items():
        host.start(key, c, None)
    ends = {key: collect(host, key)[1] for key in configs}
    assert len(host._runners) == 1  # one group held all three
    for key, c in configs.items():
        assert ends[key][0] == "done"
        assert ends[key][1].fingerprint == train(c, tiny_data).fingerprint, key


def test_groups_of_other_shapes_and_beyond_a_groups_width_keep_their_bits(
    tiny_train_config, tiny_data
):
    """Five trainings of two shapes in groups of 2: three groups, stepped side by side."""
    cfg = dataclasses.replace(tiny_train_config, group_width=2)
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, hidden=(24,)))
    configs = {f"s{i}": dataclasses.replace(cfg, seed=i) for i in range(3)}
    configs |= {"w0": wider, "w1": dataclasses.replace(wider, seed=7, n_epochs=2)}
    host = TrainingHost(slots=5, data=tiny_data)
    for key, c in configs.items():
        assert host.start(key, c, None)
    ends = {key: collect(host, key) for key in configs}
    assert len(host._runners) == 3
    for key, c in configs.items():
        rows, (kind, result) = ends[key]
        assert kind == "done", result
        assert len(rows) == c.n_epochs
        assert result.fingerprint == train(c, tiny_data).fingerprint, key


def test_a_group_warmed_up_before_its_trials_leaves_them_their_bits(tiny_train_config, tiny_data):
    """Epochs of a group with every slot empty (compile, capture) change no later trial."""
    from trainables.train import GroupRunner, Trial

    cfg = dataclasses.replace(tiny_train_config, group_width=4)
    runner = GroupRunner(GroupRunner.shape_of(cfg, tiny_data), tiny_data)
    runner.warm_up(dataclasses.replace(cfg, seed=99, learning_rate=5e-3), epochs=2)
    configs = [cfg, dataclasses.replace(cfg, seed=3)]
    outcomes = {}
    for i, c in enumerate(configs):
        runner.add(Trial(c), lambda outcome, i=i: outcomes.__setitem__(i, outcome))
    while runner.running:
        runner.run_epoch()
    runner.wait()
    for i, c in enumerate(configs):
        assert outcomes[i].fingerprint == train(c, tiny_data).fingerprint, c.seed
    with pytest.raises(ValueError, match="shape"):
        wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, hidden=(24,)))
        runner.warm_up(wider)


def test_a_host_warms_up_its_groups_and_their_trials_join_them(tiny_train_config, tiny_data):
    cfg = dataclasses.replace(tiny_train_config, group_width=2)
    host = TrainingHost(slots=2, data=tiny_data)
    host.warm_up([dataclasses.replace(cfg, seed=9), cfg])  # one shape: one group warmed
    deadline = time.monotonic() + 60
    while not host._runners and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(host._runners) == 1 and host._runners[0].group is not None
    for key, c in {"a": cfg, "b": dataclasses.replace(cfg, seed=4)}.items():
        host.start(key, c, None)
        _, (kind, result) = collect(host, key)
        assert kind == "done" and result.fingerprint == train(c, tiny_data).fingerprint, key
        assert result.timing["group_warm_up_s"] >= 0  # the group was warm before it joined
    assert len(host._runners) == 1  # the trials trained in the warmed group
    assert train(cfg, tiny_data).timing["group_warm_up_s"] is None  # a group made by its trial
    TrainingHost(slots=1).warm_up([cfg])  # no shared data: nothing to warm, no error
