"""End-to-end sweeps on a shared, module-scoped Ray (2 CPUs, 4 fake GPUs)."""

import csv
import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
from ray import tune

from sweeper.cli import audit_main, verify_main
from sweeper.driver import run_sweep
from sweeper.options import DriverOptions, apply_options
from sweeper.results import load_summary
from sweeper.spec import load_sweep
from sweeper.verify.seal import SEAL_FILE, parse_manifest
from tests.wandb_records import check_layout, offline_runs
from trainables.constants import WANDB_CONFIG
from trainables.data import prepare_data
from trainables.train import train
from trainables.wandb_run import DIRTY_TAG

pytestmark = pytest.mark.ray

SMOKE = Path(__file__).parents[1] / "configs" / "smoke.yaml"


def smoke_sweep(tmp_path, name, **overrides):
    sweep = load_sweep(SMOKE, {"outputs.best_n": 0, **overrides})
    return apply_options(sweep, DriverOptions(name=name, storage=str(tmp_path)))


def by_trial_metrics(summary):
    return {t.trial_id: t.metrics for t in summary.trials}


def run_records(folder, summary):
    return {t.trial_id: json.loads((folder / t.run_json).read_text()) for t in summary.trials}


def test_smoke_sweep_replicates_identical_seeds_differ(ray_session, tmp_path):
    sweep = smoke_sweep(tmp_path, "smoke", **{"outputs.best_n": 1})
    summary = run_sweep(sweep, DriverOptions(gpus=0)).summary
    folder = tmp_path / "smoke"

    trials = summary.trials
    assert summary.n_completed == 4 and summary.n_errored == 0
    by_seed = {}
    for t in trials:
        by_seed.setdefault(t.seed, []).append(t.fingerprint)
    assert sorted(by_seed) == [0, 1]
    for fingerprints in by_seed.values():
        assert fingerprints[0] == fingerprints[1]  # replicates: bit for bit
    assert by_seed[0][0].weights != by_seed[1][0].weights  # seeds: different models

    records = run_records(folder, summary)
    for t in trials:  # the summary is the run.json files' word, each in its own trial folder
        assert records[t.trial_id]["trial"]["trial_id"] == t.trial_id
        assert records[t.trial_id]["fingerprint"]["weights"] == t.fingerprint.weights
        assert t.environment["device"] == "cpu"
    with open(folder / "results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    for t in trials:  # Tune's own per-epoch logs of each trial, without TensorBoard files
        trial_folder = (folder / t.run_json).parent
        with open(trial_folder / "progress.csv") as handle:
            assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [1, 2, 3, 4, 5]
        assert (trial_folder / "result.json").exists()
        assert not list(trial_folder.glob("events.out.tfevents*"))
    assert (folder / "best" / "run.json").exists() and (folder / "best" / "model.pt").exists()
    best = json.loads((folder / "best" / "run.json").read_text())
    assert best["trial"]["trial_id"] == summary.best_trial
    # what a biologist takes away: every cell embedded, a UMAP, integration against PCA
    (output,) = summary.outputs.best
    assert output.trial_id == summary.best_trial
    assert (folder / output.embedding).exists() and (folder / output.umap_png).exists()
    assert "integration_score" in summary.outputs.baseline_pca
    assert "integration_score" in by_trial_metrics(summary)[summary.best_trial]
    assert "PCA of log-normalised counts" in (folder / "report.md").read_text()
    # sealed last: every result file, the outputs included, and the sweep verifies
    sealed = parse_manifest((folder / SEAL_FILE).read_bytes())
    for name in ("summary.json", "results.csv", "sweep.json", "report.html", "best/model.pt"):
        assert name in sealed
    assert {output.embedding, output.umap_png, output.loss_png} <= set(sealed)
    assert verify_main([str(folder)]) == 0


def test_an_audit_gives_its_verdict_before_outputs_and_survives_their_failure(
    ray_session, tmp_path, capsys, monkeypatch
):
    def broken(*args, **kwargs):
        raise ValueError("allow_write_nullable_strings is False")

    monkeypatch.setattr("trainables.embed.embed_run", broken)
    code = audit_main(
        [
            "--config",
            str(SMOKE),
            "--repeats",
            "2",
            "--gpus",
            "0",
            "--storage",
            str(tmp_path),
            "--name",
            "audit",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1  # the replicates are identical; the outputs failed
    assert "PASS: 1 group identical" in out
    (line,) = [x for x in err.splitlines() if "outputs failed" in x]
    assert line.startswith("invae-audit: outputs failed: ValueError: allow_write_nullable")
    assert "Traceback" not in out + err
    folder = tmp_path / "audit"
    assert "ValueError" in (folder / "outputs-error.log").read_text()
    assert load_summary(folder).outputs.error.startswith("ValueError")
    assert "outputs-error.log" in parse_manifest((folder / SEAL_FILE).read_bytes())
    assert verify_main([str(folder)]) == 0  # sealed after the failure: nothing is unaccounted


def test_wandb_queue_keeps_every_result_in_order_without_waiting_for_them(ray_session):
    from ray.air.integrations.wandb import _QueueItem
    from ray.util.queue import Queue

    from sweeper.tracking import _PipelinedQueue

    queue = Queue()
    items = [(_QueueItem.RESULT, {"epoch": epoch}) for epoch in range(1, 201)]
    items.append((_QueueItem.END, None))
    pipelined = _PipelinedQueue(queue)
    for item in items:
        pipelined.put(item)
    assert [queue.get(timeout=30) for _ in items] == items
    assert queue.empty()


def test_every_trial_has_a_complete_offline_wandb_run_in_the_one_layout(ray_session, tmp_path):
    sweep = smoke_sweep(tmp_path, "wb", **{"wandb.tags": ["smoke-test"]})
    outcome = run_sweep(sweep, DriverOptions(gpus=0))
    summary, folder = outcome.summary, tmp_path / "wb"
    runs = offline_runs(folder / "wandb")
    records = run_records(folder, summary)
    assert set(runs) == {*records, *(r for r in runs if runs[r].job_type == "report")}
    assert len(runs) == len(records) + 1  # one run per trial, plus the sweep's report run
    dirty = records[summary.trials[0].trial_id]["environment"]["git"]["is_dirty"]
    groups = {}
    for trial in summary.trials:
        run, record = runs[trial.trial_id], records[trial.trial_id]
        check_layout(run, record)
        assert run.summary["run_json"] == str(folder / trial.run_json)
        assert run.job_type == "trial" and run.config["trial/replicate"] == trial.replicate
        assert run.config["node/hostname"] and run.config["sweep/name"] == "wb"
        assert run.tags == ["smoke-test", *([DIRTY_TAG] if dirty else [])]
        assert not {"seed", "replicate", "config", "trial_id"} & {k for r in run.history for k in r}
        groups.setdefault(run.group, set()).add((trial.seed, trial.replicate))
    # replicates of a seed share a group: W&B shows them side by side
    assert groups == {
        "wb/seed=0": {(0, 0), (0, 1)},
        "wb/seed=1": {(1, 0), (1, 1)},
    }
    (report,) = (r for r in runs.values() if r.job_type == "report")
    assert report.group == "wb" and report.summary["verification/verdict"] == "PASS"
    assert report.summary["verification/groups/identical"] == 2
    assert outcome.verification.verdict == "PASS"


def test_fake_gpus_spread_trials_over_gpus_and_train_on_cpu(ray_session, tmp_path):
    sweep = smoke_sweep(tmp_path, "gpus", **{"resources.trials_per_gpu": 2})
    summary = run_sweep(sweep, DriverOptions(gpus=4)).summary
    records = run_records(tmp_path / "gpus", summary)
    gpu_ids = [r["trial"]["node"]["gpu_ids"] for r in records.values()]
    # 2 CPUs: 2 concurrent trials, so each gets a whole GPU rather than sharing GPU 0
    assert all(len(ids) == 1 for ids in gpu_ids)
    assert len({ids[0] for ids in gpu_ids}) >= 2
    assert all(r["model"]["device"] == "cpu" for r in records.values())


class KillReplicateZerosProcessOnce(tune.Callback):
    """Kill the process training replicate 0 at its epoch 3 (after its checkpoint), once.

    That is the trial's worker, or with ``one_process_per_gpu`` its GPU's training process.
    """

    def __init__(self):
        self.pid, self.killed = None, False

    def on_trial_result(self, iteration, trials, trial, result):
        if trial.config["replicate"] != 0:
            return
        first = result.get(WANDB_CONFIG) or {}  # a trial's first result says where it runs
        if "node/pid" in first:
            self.pid = first["node/pid"]
        if not self.killed and result["training_iteration"] == 3:
            self.killed = True
            os.kill(self.pid, signal.SIGKILL)


@pytest.mark.parametrize("one_process_per_gpu", [False, True])
def test_killed_training_process_resumes_from_checkpoint_and_ends_bit_for_bit(
    ray_session, tmp_path, one_process_per_gpu
):
    overrides = {"seeds": [0], "train.n_epochs": 6}
    if one_process_per_gpu:  # it trains ahead of what the driver has seen: give it time
        overrides.update({"train.n_epochs": 40, "resources.one_process_per_gpu": True})
    sweep = smoke_sweep(tmp_path, "kill", **{"resources.trials_per_gpu": 2, **overrides})
    killer = KillReplicateZerosProcessOnce()
    summary = run_sweep(sweep, DriverOptions(gpus=1), extra_callbacks=[killer]).summary
    assert killer.killed
    first, second = sorted(summary.trials, key=lambda t: t.replicate)
    assert first.status == second.status == "completed"
    assert first.restored
    assert first.fingerprint == second.fingerprint


def test_a_trial_that_keeps_failing_is_errored_with_its_reason(ray_session, tmp_path):
    sweep = smoke_sweep(
        tmp_path,
        "nan",
        seeds=[0],
        replicates=1,
        search={"learning_rate": {"grid": [1.0e-3, 1.0e12]}},
        max_failures=1,
        **{"train.grad_clip": None},
    )
    summary = run_sweep(sweep, DriverOptions(gpus=0)).summary
    by_rate = {t.params["learning_rate"]: t for t in summary.trials}
    assert by_rate[1.0e-3].status == "completed"
    bad = by_rate[1.0e12]
    assert bad.status == "errored" and bad.run_json is None
    assert "non-finite loss" in bad.error
    assert summary.best_trial == by_rate[1.0e-3].trial_id


def shared_process_sweep(tmp_path, name, **overrides):
    return smoke_sweep(
        tmp_path,
        name,
        **{"resources.one_process_per_gpu": True, "resources.trials_per_gpu": 2, **overrides},
    )


def test_one_process_per_gpu_trains_side_by_side_with_the_bits_of_a_lone_run(ray_session, tmp_path):
    # half a CPU each: all 4 trials at once on the 2 CPUs, 2 per (fake) GPU, in groups of 2
    sweep = shared_process_sweep(tmp_path, "shared", **{"resources.cpus_per_trial": 0.5})
    summary = run_sweep(sweep, DriverOptions(gpus=2)).summary
    assert summary.n_completed == 4
    records = run_records(tmp_path / "shared", summary)
    pids = [r["trial"]["node"]["pid"] for r in records.values()]
    assert len(set(pids)) <= 2 < len(pids)  # one process per (fake) GPU trained its trials
    assert all(len(r["trial"]["node"]["gpu_ids"]) == 1 for r in records.values())
    widths = {r["config"]["train"]["group_width"] for r in records.values()}
    assert widths == {2}  # 2 trials at once per GPU: groups of 2, recorded
    data = prepare_data(sweep.data)
    for seed in (0, 1):
        cfg = dataclasses.replace(sweep.train, seed=seed, group_width=2)
        alone = train(cfg, data).fingerprint.digests
        assert [t.fingerprint for t in summary.trials if t.seed == seed] == [alone] * 2


def test_storage_given_as_a_uri_goes_through_pyarrow(ray_session, tmp_path, monkeypatch):
    """A URI storage path (here file://, as s3:// or gs:// would be) end to end."""
    monkeypatch.chdir(tmp_path)  # W&B runs of URI-stored sweeps go to ./runs/<name>
    sweep = load_sweep(SMOKE, {"outputs.best_n": 0, "replicates": 1, "seeds": [0]})
    sweep = apply_options(sweep, DriverOptions(name="uri", storage=f"file://{tmp_path}/store"))
    summary = run_sweep(sweep, DriverOptions(gpus=0)).summary
    folder = tmp_path / "store" / "uri"
    assert summary.n_completed == 1
    assert json.loads((folder / "summary.json").read_text())["n_completed"] == 1
    assert (folder / summary.trials[0].run_json).exists()
    assert (folder / "best" / "model.pt").exists() and (folder / "results.csv").exists()
    assert list((tmp_path / "runs" / "uri" / "wandb").glob("offline-run-*"))


def test_trials_asha_stops_early_end_the_sweep_it_is_not_an_interruption(ray_session, tmp_path):
    overrides = {
        "seeds": [0],
        "replicates": 1,
        "search": {"learning_rate": {"grid": [1e-2, 1e-3, 1e-4, 1e-5]}},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "max_concurrent_trials": 1,  # in turn, best first: the later ones fall below its rungs
    }
    summary = run_sweep(smoke_sweep(tmp_path, "asha", **overrides), DriverOptions(gpus=0)).summary
    epochs = sorted(int(t.metrics["epoch"]) for t in summary.trials)
    assert len(epochs) == 4 and epochs[0] < 5 == epochs[-1]  # some stopped early, one finished
