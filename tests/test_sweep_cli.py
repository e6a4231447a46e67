"""invae-sweep's command line: dry run, input errors, and resume after the driver is killed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sweeper.cli import sweep_main, verify_main

SMOKE = str(Path(__file__).parents[1] / "configs" / "smoke.yaml")
SWEEP = str(Path(__file__).parents[1] / "configs" / "sweep.yaml")


def test_dry_run_prints_every_trial_and_starts_nothing(tmp_path, capsys):
    import ray

    args = [
        "--config",
        SWEEP,
        "--dry-run",
        "--gpus",
        "4",
        "--cpus",
        "24",
        "--storage",
        str(tmp_path),
    ]
    assert sweep_main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("24 trials ->")
    assert out[1].split() == [
        "trial",
        "seed",
        "replicate",
        "learning_rate",
        "model.z_i_dim",
        "cpus",
        "gpus",
    ]
    assert len(out) == 2 + 24 + 1
    assert out[2].split()[-1] == "0.1667"  # 24 trials on 4 GPUs: 6 per GPU
    assert out[-1] == (
        "placement: one process per GPU (4), each training up to 6 trials at once in groups "
        "of 6 (group_width 6: the trials' bits depend on it)"
    )
    assert not ray.is_initialized()
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [
        ("24", "up to 24 trials at once in groups of 12"),
        ("16", "up to 16 trials at once (16 CPUs, 1 per trial) in groups of 16"),
        ("8", "up to 8 trials at once (8 CPUs, 1 per trial) in groups of 8"),
    ],
)
def test_dry_run_plans_with_the_cpus_the_sweep_will_have(tmp_path, capsys, cpus, expected):
    """Each trial reserves cpus_per_trial: fewer CPUs than trials train fewer at once.

    They then train in narrower groups, and the group width sets the trials' bits.
    """
    args = [
        "--config",
        SWEEP,
        "--dry-run",
        "--gpus",
        "1",
        "--cpus",
        cpus,
        "--storage",
        str(tmp_path),
    ]
    assert sweep_main(args) == 0
    assert expected in capsys.readouterr().out.splitlines()[-1]


def test_dry_run_counts_this_machines_cpus_as_ray_would(tmp_path, capsys, monkeypatch):
    import ray._private.utils

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray._private.utils, "get_num_cpus", lambda: 4)
    args = ["--config", SWEEP, "--dry-run", "--gpus", "1", "--storage", str(tmp_path)]
    assert sweep_main(args) == 0
    assert "up to 4 trials at once (4 CPUs, 1 per trial)" in capsys.readouterr().out


def test_an_existing_sweep_folder_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "invae-smoke").mkdir()
    (tmp_path / "invae-smoke" / "summary.json").write_text("{}")
    assert sweep_main(["--config", SMOKE, "--storage", str(tmp_path), "--gpus", "0"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "invae-smoke" / "summary.json").read_text() == "{}"


def test_online_wandb_without_api_key_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    args = ["--config", SMOKE, "--storage", str(tmp_path), "--gpus", "0"]
    sweep = tmp_path / "online.yaml"
    sweep.write_text(Path(SMOKE).read_text().replace("mode: offline", "mode: online"))
    sweep.with_name("train_config.yaml").write_text("")
    sweep.with_name("data_config.yaml").write_text("")
    args[1] = str(sweep)
    assert sweep_main(args) == 2
    assert "API key" in capsys.readouterr().err


def run_driver(storage, *extra, env=None):
    env = {**os.environ, "INVAE_SWEEP_CACHE": str(storage / "cache"), **(env or {})}
    command = [
        sys.executable,
        "-c",
        "import sys; from sweeper.cli import sweep_main; sys.exit(sweep_main())",
    ]
    command += ["--config", SMOKE, "--storage", str(storage), "--gpus", "0", "--cpus", "2", *extra]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_for_a_finished_trial(driver, folder):
    deadline = time.monotonic() + 300
    while not list(folder.glob("*/run.json")):
        assert driver.poll() is None, driver.stdout.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.5)


@pytest.mark.ray
def test_resume_after_the_driver_is_killed_reruns_no_finished_trial(tmp_path):
    driver, folder = run_driver(tmp_path), tmp_path / "invae-smoke"
    wait_for_a_finished_trial(driver, folder)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
    driver.wait()
    finished = {p: p.stat().st_mtime_ns for p in folder.glob("*/run.json")}
    assert not (folder / "summary.json").exists()

    resumed = run_driver(tmp_path, "--resume")
    out = resumed.communicate(timeout=600)[0].decode()
    assert resumed.returncode == 0, out[-3000:]
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in finished.items())  # not rerun
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["n_trials"] == summary["n_completed"] == 4
    for trial in summary["trials"]:
        assert (folder / trial["run_json"]).exists()
    by_seed = {}
    for t in summary["trials"]:
        by_seed.setdefault(t["seed"], set()).add(t["fingerprint"]["weights"])
    assert all(len(weights) == 1 for weights in by_seed.values())
    assert verify_main([str(folder)]) == 0  # the resumed sweep resealed every file it changed


@pytest.mark.ray
def test_ctrl_c_is_one_line_exit_130_and_the_sweep_resumes(tmp_path):
    driver, folder = run_driver(tmp_path), tmp_path / "invae-smoke"
    wait_for_a_finished_trial(driver, folder)
    os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C in a terminal: the driver's process group
    out = driver.communicate(timeout=120)[0].decode()
    assert driver.returncode == 130, out[-3000:]
    (line,) = [x for x in out.splitlines() if x.startswith("invae-sweep: interrupted:")]
    assert "continue with --resume" in line and "Traceback" not in out
    assert not (folder / "summary.json").exists()

    resumed = run_driver(tmp_path, "--resume")
    out = resumed.communicate(timeout=600)[0].decode()
    assert resumed.returncode == 0, out[-3000:]
    assert verify_main([str(folder)]) == 0


SECRETS = {
    "WANDB_API_KEY": "local-wandb-secret-4f1e2d3c",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-9a8b7c6d5e",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEY1234567",
    "HF_TOKEN": "hf_fake_token_24680",
    "GITHUB_TOKEN": "ghp_fake_token_13579",
}


@pytest.mark.ray
def test_no_credential_in_the_environment_lands_in_any_file(tmp_path):
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    home = tmp_path / "home"
    home.mkdir()
    try:
        env = {"RAY_TMPDIR": str(ray_tmp), "HOME": str(home), **SECRETS}
        driver = run_driver(tmp_path / "store", env=env)
        out = driver.communicate(timeout=600)[0].decode()
        assert driver.returncode == 0, out[-3000:]
        written = [p for root in (ray_tmp, tmp_path) for p in root.rglob("*") if p.is_file()]
        assert any("session_" in str(p) for p in written)  # Ray's own logs are searched
        assert any(p.suffix == ".wandb" for p in written)  # and W&B's offline runs
        for path in written:
            payload = path.read_bytes()
            for name, value in SECRETS.items():
                assert value.encode() not in payload, f"{name} in {path}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture
def trial_folders(tmp_path, monkeypatch):
    """A trial ``trial_1`` in its working folder, outside Ray; returns its folder in storage."""
    from ray import tune

    class Context:
        def get_trial_id(self):
            return "trial_1"

    working = tmp_path / "work" / "tune_trainable_trial_1_seed=0"
    working.mkdir(parents=True)
    monkeypatch.chdir(working)
    monkeypatch.setattr(tune, "get_context", Context)
    return tmp_path / "sweep" / working.name


@pytest.fixture(scope="module")
def finished(tiny_data):
    """A finished tiny run, as an earlier attempt of a trial would have synced it."""
    import dataclasses

    from trainables.config import ModelConfig, TrainConfig
    from trainables.train import train

    config = TrainConfig(n_epochs=2, batch_size=64, device="cpu", model=ModelConfig(hidden=(8,)))
    return train(dataclasses.replace(config, seed=3), tiny_data)


def synced_run(folder, result, trial_id="trial_1", weights=True):
    from trainables.run_record import TrialInfo, write_run

    write_run(result, folder, trial=TrialInfo(trial_id, 1))
    if not weights:
        (folder / "model.pt").unlink()


@pytest.mark.parametrize(
    ("recorded_id", "weights", "found"),
    [
        ("trial_1", True, True),
        ("trial_1", False, False),  # the sync was cut short before the weights
        ("trial_2", True, False),  # another trial's record
        (None, False, False),  # the earlier attempt synced nothing
    ],
)
def test_a_trial_finds_the_run_json_an_earlier_attempt_synced(
    trial_folders, finished, recorded_id, weights, found
):
    from trainables.ray_trainable import earlier_record

    if recorded_id is not None:
        synced_run(trial_folders, finished, recorded_id, weights)
    assert (earlier_record(str(trial_folders.parent)) is not None) is found
    assert earlier_record(None) is None


def test_a_trial_ignores_a_synced_file_that_is_not_a_run_record(trial_folders):
    from trainables.ray_trainable import earlier_record

    trial_folders.mkdir(parents=True)
    (trial_folders / "run.json").write_text(json.dumps({"trial": {"trial_id": "trial_1"}}))
    (trial_folders / "model.pt").write_bytes(b"weights")
    assert earlier_record(str(trial_folders.parent)) is None


def test_a_finished_trial_reports_its_record_instead_of_training(
    trial_folders, finished, monkeypatch
):
    from ray import tune

    import trainables.ray_trainable as adapter
    from trainables.config import DataConfig, TrainConfig
    from trainables.schema import config_to_dict

    def no_training(*args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    reported = []
    monkeypatch.setattr(adapter, "train", no_training)
    monkeypatch.setattr(tune, "report", lambda row, **kwargs: reported.append(row))
    synced_run(trial_folders, finished)
    adapter.tune_trainable(
        {"train": {"seed": 3}, "replicate": 1},
        config_to_dict(TrainConfig()),
        config_to_dict(DataConfig()),
        storage=str(trial_folders.parent),
    )
    last = {**finished.history[-1], **finished.integration}
    assert reported == [{**last, "seed": 3, "replicate": 1}]


def test_output_piped_into_a_reader_that_goes_away_ends_without_a_traceback():
    """``invae-sweep --dry-run | head -1``: the reader closes the pipe before the table."""
    import subprocess
    import sys

    command = [
        sys.executable,
        "-c",
        "from sweeper.cli import sweep_main; raise SystemExit(sweep_main())",
    ]
    proc = subprocess.Popen(
        [*command, "--config", SWEEP, "--dry-run", "--gpus", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before anything is written
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "Traceback" not in stderr and "Broken pipe" not in stderr, stderr
