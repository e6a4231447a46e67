"""Replicate verification on sweep folders built without Ray (same layout as a real sweep)."""

import dataclasses
import json
import shutil

import pytest
import torch

from sweeper.analysis import ulp_distance, verify_sweep
from sweeper.cli import verify_main
from trainables.fingerprint import metrics_digest, tensor_digest
from trainables.run_record import write_run
from trainables.train import train


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory, tiny_data):
    """Seed 1 x 2 replicates and seed 2 x 2 replicates, written like a finished sweep."""
    from trainables.config import ModelConfig, TrainConfig

    folder = tmp_path_factory.mktemp("sweep")
    base = TrainConfig(n_epochs=3, batch_size=64, device="cpu", model=ModelConfig(hidden=(16,)))
    trials = []
    for seed in (1, 2):
        result = train(dataclasses.replace(base, seed=seed), tiny_data)
        for replicate in (0, 1):
            trial_id = f"t{seed}{replicate}"
            write_run(result, folder / trial_id, extra={"trial": {"trial_id": trial_id}})
            trials.append(
                {
                    "trial_id": trial_id,
                    "status": "completed",
                    "seed": seed,
                    "replicate": replicate,
                    "params": {"learning_rate": 1e-3},
                    "run_json": f"{trial_id}/run.json",
                    "fingerprint": result.fingerprint,
                }
            )
    (folder / "summary.json").write_text(json.dumps({"metric": "val_loss", "trials": trials}))
    return folder


@pytest.fixture
def sweep(sweep_folder, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_folder, copy)
    return copy


def edit_run(folder, trial_id, change):
    path = folder / trial_id / "run.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_identical_replicates_pass(sweep):
    verification = verify_sweep(sweep)
    assert verification["passed"]
    assert [g["status"] for g in verification["groups"]] == ["identical", "identical"]
    assert verify_main([str(sweep)]) == 0
    assert (sweep / "verification.json").exists()
    assert (sweep / "verification.html").exists() and (sweep / "verification.md").exists()


def test_a_changed_epoch_loss_is_located(sweep):
    def tamper(record):
        record["history"][1]["val_loss"] = float(
            torch.nextafter(
                torch.tensor(record["history"][1]["val_loss"], dtype=torch.float64),
                torch.tensor(1e9, dtype=torch.float64),
            )
        )
        record["fingerprint"]["metrics"] = metrics_digest(record["history"])

    edit_run(sweep, "t11", tamper)
    verification = verify_sweep(sweep)
    group = next(g for g in verification["groups"] if g["seed"] == 1)
    assert group["status"] == "diverged" and not verification["passed"]
    first = group["comparisons"][0]["first_divergence"]
    assert first["epoch"] == 2
    assert list(first["metrics"]) == ["val_loss"]
    assert first["metrics"]["val_loss"]["ulps"] == 1
    assert group["comparisons"][0]["differing_tensors"] == []
    assert verify_main([str(sweep)]) == 1


def test_a_changed_weight_is_located_and_sized(sweep):
    model_file = sweep / "t21" / "model.pt"
    saved = torch.load(model_file, weights_only=True)
    saved["model"]["dec_freq.weight"][3, 4] += 0.5
    torch.save(saved, model_file)

    def tamper(record):
        record["fingerprint"]["parameters"]["dec_freq.weight"] = tensor_digest(
            saved["model"]["dec_freq.weight"]
        )
        record["fingerprint"]["weights"] = "0" * 64

    edit_run(sweep, "t21", tamper)
    group = next(g for g in verify_sweep(sweep)["groups"] if g["seed"] == 2)
    assert group["status"] == "diverged"
    comparison = group["comparisons"][0]
    assert comparison["first_divergence"] is None  # metrics agree; only the weights differ
    (tensor,) = comparison["differing_tensors"]
    assert tensor["name"] == "dec_freq.weight" and tensor["n_differing"] == 1
    assert tensor["max_abs_diff"] == pytest.approx(0.5, rel=1e-6)


def test_other_gpu_model_is_not_comparable_not_a_failure(sweep):
    def other_gpu(record):
        record["environment"]["system"]["gpu_names"] = ["NVIDIA H200"]
        record["model"]["device"] = "cuda:0"
        record["history"][0]["train_loss"] += 1e-3
        record["fingerprint"]["metrics"] = metrics_digest(record["history"])

    edit_run(sweep, "t11", other_gpu)
    verification = verify_sweep(sweep)
    group = next(g for g in verification["groups"] if g["seed"] == 1)
    assert group["status"] == "not_comparable"
    assert verification["passed"]
    reasons = group["comparisons"][0]["not_comparable_because"]
    assert "gpu" in reasons and "device" in reasons
    assert group["comparisons"][0]["metric_drift"]["train_loss"] > 0


def test_non_deterministic_mode_is_not_comparable(sweep):
    for trial_id in ("t10", "t11"):
        edit_run(sweep, trial_id, lambda r: r["seeding"].update(deterministic=False))
    edit_run(sweep, "t11", lambda r: r["fingerprint"].update(weights="x" * 64))
    group = next(g for g in verify_sweep(sweep)["groups"] if g["seed"] == 1)
    assert group["status"] == "not_comparable"
    assert "deterministic mode off" in group["comparisons"][0]["not_comparable_because"]
    assert "loss_spread" in group


def test_a_member_that_did_not_complete_makes_the_group_incomplete(sweep):
    summary = json.loads((sweep / "summary.json").read_text())
    summary["trials"][1].update(status="errored", run_json=None, fingerprint=None)
    (sweep / "summary.json").write_text(json.dumps(summary))
    group = next(g for g in verify_sweep(sweep)["groups"] if g["seed"] == 1)
    assert group["status"] == "incomplete"


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda s: (s / "summary.json").unlink(), "summary.json"),
        (lambda s: (s / "summary.json").write_text("{not json"), "summary.json"),
        (lambda s: (s / "t20" / "run.json").unlink(), "t20/run.json"),
        (lambda s: (s / "t20" / "run.json").write_text('{"trunc'), "t20/run.json"),
    ],
)
def test_missing_or_corrupt_files_exit_2_naming_the_file(sweep, capsys, damage, named):
    damage(sweep)
    assert verify_main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert named in err and err.startswith("invae-verify: error:")


def test_corrupt_model_file_is_named_when_needed(sweep, capsys):
    def tamper(record):
        record["fingerprint"]["parameters"]["dec_freq.bias"] = "x" * 64
        record["fingerprint"]["weights"] = "y" * 64

    edit_run(sweep, "t21", tamper)
    (sweep / "t21" / "model.pt").write_bytes(b"garbage")
    assert verify_main([str(sweep)]) == 2
    assert "t21/model.pt" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("x", "y", "ulps"),
    [(1.0, 1.0, 0), (1.0, 1.0000000000000002, 1), (-0.0, 0.0, 0), (1.0, float("nan"), None)],
)
def test_ulp_distance(x, y, ulps):
    assert ulp_distance(x, y) == ulps
