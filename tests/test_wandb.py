"""W&B runs of single trainings: the Python API of the README and ``invae-train --wandb``.

Each offline run is read back from its ``.wandb`` transaction log (``tests/wandb_records``).
"""

import json

import pytest

from sweeper.cli import train_main
from tests.wandb_records import check_layout, offline_runs
from trainables.wandb_run import DIRTY_TAG, point_group, tags

TINY_TRAIN = {"n_epochs": 2, "batch_size": 64, "model.hidden": [16, 16], "device": "cpu"}
TINY_DATA = {"simulation.n_cells": 200, "simulation.n_genes": 150, "n_top_genes": 100}
TINY = ["--smoke", "--set", "n_epochs=2", "--set", "data.simulation.n_cells=200"]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A clean working folder, W&B offline and quiet, no API key, a private data cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("INVAE_SWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_readme_python_api_trains_logs_offline_and_records_the_run(offline):
    from trainables.config import load_data_config, load_train_config
    from trainables.run_record import write_run
    from trainables.train import train

    train_cfg = load_train_config(overrides=TINY_TRAIN)
    data_cfg = load_data_config(overrides=TINY_DATA)
    result = train(train_cfg, data_cfg, use_wandb=True)  # as the README writes it
    (run,) = offline_runs(offline / "wandb").values()  # offline, in ./wandb
    assert result.wandb.run_id == run.run_id and result.wandb.mode == "offline"
    write_run(result, offline / "out", data_cfg)
    record = json.loads((offline / "out" / "run.json").read_text())
    check_layout(run, record, wrote_run_json=False)
    assert record["wandb"]["run_id"] == run.run_id  # run.json keeps the W&B run id


def test_logging_to_wandb_does_not_change_the_bits(offline):
    from trainables.config import load_data_config, load_train_config
    from trainables.train import train

    train_cfg = load_train_config(overrides=TINY_TRAIN)
    data_cfg = load_data_config(overrides=TINY_DATA)
    logged = train(train_cfg, data_cfg, use_wandb=True)
    plain = train(train_cfg, data_cfg)
    assert logged.fingerprint == plain.fingerprint and plain.wandb is None


def test_main_trains_the_default_configs(offline, monkeypatch):
    from trainables import config
    from trainables.train import main

    defaults = config.load_train_config(), config.load_data_config()
    assert defaults[0].seed == 42 and defaults[0].deterministic  # what main() trains with
    # The defaults take hours on a CPU: main() runs here as written, on tiny configs.
    real_train, real_data = config.load_train_config, config.load_data_config
    monkeypatch.setattr(config, "load_train_config", lambda: real_train(overrides=TINY_TRAIN))
    monkeypatch.setattr(config, "load_data_config", lambda: real_data(overrides=TINY_DATA))
    result = main()
    assert result.train_config.seed == 42 and result.seeding["deterministic"] is True
    assert len(result.history) == 2


def test_readme_set_seed_and_environment_info_keys():
    import torch

    from trainables import get_environment_info, set_seed

    seeding = set_seed(42, deterministic=True)
    assert seeding["seed"] == 42 and seeding["cudnn_deterministic"] is True
    assert seeding["cudnn_benchmark"] is False
    info = get_environment_info()
    assert info["packages"]["pytorch"] == info["packages"]["torch"]
    assert info["system"]["pytorch_version"] == info["system"]["torch_version"]
    assert info["system"]["torch_version"] == str(torch.__version__)


def test_invae_train_wandb_offline_run_holds_the_whole_layout(offline):
    assert train_main([*TINY, "--wandb", "offline", "--out", "out"]) == 0
    (run,) = offline_runs(offline / "out" / "wandb").values()
    record = json.loads((offline / "out" / "run.json").read_text())
    check_layout(run, record)
    assert run.summary["run_json"] == str(offline / "out" / "run.json")
    assert run.project == "invae-sweep"
    assert (DIRTY_TAG in run.tags) is record["environment"]["git"]["is_dirty"]


def test_a_dirty_tree_tags_the_run_uncommitted_changes(offline, monkeypatch):
    import trainables.provenance as provenance

    git = provenance.git_info

    def dirty(path):
        return {**git(path), "is_dirty": True}

    monkeypatch.setattr(provenance, "git_info", dirty)
    assert train_main([*TINY, "--wandb", "offline", "--out", "out"]) == 0
    (run,) = offline_runs(offline / "out" / "wandb").values()
    assert DIRTY_TAG in run.tags and run.config["git/is_dirty"] is True


def test_a_training_stopped_by_ctrl_c_still_ends_its_wandb_run(offline, monkeypatch):
    def interrupted(*args, report=None, **kwargs):
        report({"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "beta": 0.4})
        raise KeyboardInterrupt

    monkeypatch.setattr("trainables.train.train", interrupted)  # train_logged's train
    assert train_main([*TINY, "--wandb", "offline", "--out", "out"]) == 130
    (run,) = offline_runs(offline / "out" / "wandb").values()
    assert run.exit_code == 1 and len(run.history) == 1
    assert not (offline / "out" / "run.json").exists()


def test_tags_add_uncommitted_changes_only_for_a_dirty_tree():
    assert tags(("a",), True) == ["a", DIRTY_TAG]
    assert tags(("a",), False) == tags(("a",), None) == ["a"]
    assert tags((DIRTY_TAG,), True) == [DIRTY_TAG]


def test_replicates_share_a_group_and_points_do_not():
    point = {"train": {"seed": 0, "learning_rate": 0.001}, "data": {}}
    group = point_group("sweep", {**point, "replicate": 0})
    assert (
        group
        == point_group("sweep", {**point, "replicate": 1})
        == "sweep/seed=0,learning_rate=0.001"
    )
    assert group != point_group("sweep", {**point, "train": {"seed": 1, "learning_rate": 0.001}})
    long = {"train": {"seed": 0, **{f"k{i}": "x" * 20 for i in range(10)}}, "replicate": 0}
    name = point_group("s" * 200, long)
    assert len(name) <= 128 and name == point_group("s" * 200, {**long, "replicate": 3})
