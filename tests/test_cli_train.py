import json
import subprocess
import sys

import pytest
import torch

from sweeper.cli import train_main
from sweeper.overrides import parse_overrides
from trainables.schema import ConfigError

TINY = [
    "--smoke",
    "--set",
    "n_epochs=2",
    "--set",
    "data.simulation.n_cells=200",
    "--set",
    "data.n_top_genes=100",
]


def run_cli(*args, env_cache):
    code = "import sys; from sweeper.cli import train_main; sys.exit(train_main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={"INVAE_SWEEP_CACHE": env_cache, "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("INVAE_SWEEP_CACHE", str(tmp_path / "cache"))
    return str(tmp_path / "cache")


def test_two_processes_same_config_identical_fingerprint_other_seed_differs(tmp_path, cache_env):
    fingerprints = []
    for name, seed in [("a", 42), ("b", 42), ("c", 43)]:
        proc = run_cli(
            *TINY, "--set", f"seed={seed}", "--out", str(tmp_path / name), env_cache=cache_env
        )
        assert proc.returncode == 0, proc.stderr
        fingerprints.append(json.loads((tmp_path / name / "run.json").read_text())["fingerprint"])
    assert fingerprints[0] == fingerprints[1]
    assert fingerprints[0]["weights"] != fingerprints[2]["weights"]


def test_run_json_and_model_file_hold_the_record(tmp_path, cache_env):
    assert train_main([*TINY, "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "run.json").read_text())
    for key in ("config", "seeding", "environment", "data", "model", "history", "fingerprint"):
        assert key in record
    assert record["config"]["train"]["n_epochs"] == 2
    assert record["seeding"]["deterministic"] is True
    assert set(record["environment"]) == {"git", "system", "packages"}
    assert len(record["history"]) == 2
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(saved["model"]) == set(record["fingerprint"]["parameters"])


def test_diverging_run_exits_1(tmp_path, cache_env, capsys):
    args = ["--set", "learning_rate=1e12", "--set", "grad_clip=null"]
    assert train_main([*TINY, *args, "--out", str(tmp_path)]) == 1
    assert "non-finite loss" in capsys.readouterr().err


def test_overrides_split_between_train_and_data():
    train, data = parse_overrides(["model.hidden=[8, 4]", "data.n_top_genes=10", "seed=3"])
    assert train == {"model.hidden": [8, 4], "seed": 3}
    assert data == {"n_top_genes": 10}


def test_empty_key_is_rejected():
    with pytest.raises(ConfigError):
        parse_overrides(["=3"])


def test_wandb_keeps_no_user_or_token_of_a_git_remote(tmp_path, cache_env, monkeypatch):
    import git

    repo = git.Repo.init(tmp_path / "repo")
    repo.create_remote("origin", "https://alice:s3cr3t-token@example.com/lab/x.git")
    actor = git.Actor("Test", "test@example.com")
    repo.index.commit("first", author=actor, committer=actor)
    monkeypatch.chdir(tmp_path / "repo")  # where W&B would look for git on its own
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    assert train_main([*TINY, "--wandb", "offline", "--out", str(out)]) == 0
    for path in (p for p in out.rglob("*") if p.is_file()):
        payload = path.read_bytes()
        assert b"alice" not in payload and b"s3cr3t-token" not in payload, path
