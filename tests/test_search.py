"""TPE search: suggestions that do not depend on timing, every point at every seed, resume."""

import json
import math
import os
import random
import signal
from pathlib import Path

import pytest
from ray import tune

from sweeper.cli import sweep_main, verify_main
from sweeper.driver import SweepInterrupted, run_sweep
from sweeper.options import DriverOptions, apply_options
from sweeper.search import SUGGESTION
from sweeper.searchers import BatchedTPE, known_trials, slot_of
from sweeper.spec import load_sweep
from trainables.constants import TUNE_REPLICATE

CONFIGS = Path(__file__).parents[1] / "configs"
SEARCH = {
    "learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
    "model.hidden": {"choice": [[32], [32, 32]]},  # Optuna takes no lists: chosen by index
    "model.z_i_dim": {"randint": [2, 6]},
}
TPE = {
    "seeds": [0, 1],
    "replicates": 2,
    "num_samples": 3,  # points: a batch of 2, then one
    "search": SEARCH,
    "searcher": {"type": "optuna", "batch_size": 2, "startup_points": 2},
    "train.n_epochs": 2,
    "outputs.best_n": 0,
    "wandb.mode": "disabled",
}


def tpe_sweep(storage=None, name="tpe", **overrides):
    sweep = load_sweep(CONFIGS / "smoke.yaml", {**TPE, **overrides})
    return apply_options(sweep, DriverOptions(name=name, storage=str(storage or "/nowhere")))


def objective(config):
    """A made-up metric of a trial config, lowest near learning_rate 1e-3."""
    train = config["train"]
    return (math.log10(train["learning_rate"]) + 3) ** 2 + len(train["model"]["hidden"]) / 10


def drive(searcher, rng, limit, stop_after=None):
    """Run a searcher as Tune would: at most ``limit`` trials at once, ending in random order.

    Returns the configs in the order suggested (and the trials still running, if stopped).
    """
    suggested, running, ended = [], {}, 0
    while True:
        while len(running) < limit:
            config = searcher.suggest(f"t{len(suggested)}")
            if not isinstance(config, dict):
                break
            batch = config[SUGGESTION] // 2
            assert all(c[SUGGESTION] // 2 >= batch for c in running.values())  # earlier: done
            running[f"t{len(suggested)}"] = config
            suggested.append(config)
        if not running:
            assert config == searcher.FINISHED
            return suggested, running
        if stop_after is not None and ended == stop_after:
            return suggested, running
        trial_id = rng.choice(sorted(running))
        searcher.on_trial_complete(trial_id, {"val_loss": objective(running.pop(trial_id))})
        ended += 1


def test_suggestions_do_not_depend_on_when_results_arrive():
    sweep = tpe_sweep(num_samples=6)
    runs = [
        drive(BatchedTPE(sweep), random.Random(i), limit)[0] for i, limit in enumerate([1, 3, 8])
    ]
    assert runs[0] == runs[1] == runs[2]
    other = tpe_sweep(num_samples=6, searcher_seed=1)
    assert drive(BatchedTPE(other), random.Random(0), 8)[0] != runs[0]


def test_every_point_runs_at_every_seed_and_replicate_with_one_config():
    suggested, _ = drive(BatchedTPE(tpe_sweep()), random.Random(0), 4)
    assert sorted(slot_of(c) for c in suggested) == [
        (point, seed, replicate) for point in range(3) for seed in (0, 1) for replicate in (0, 1)
    ]
    for point in range(3):
        configs = [c for c in suggested if c[SUGGESTION] == point]
        bare = [{**c, "train": {**c["train"], "seed": 0}, TUNE_REPLICATE: 0} for c in configs]
        assert all(b == bare[0] for b in bare)  # they differ in seed and replicate only
        model = configs[0]["train"]["model"]
        assert model["hidden"] in ([32], [32, 32]) and 2 <= model["z_i_dim"] <= 5
        assert 1e-4 <= configs[0]["train"]["learning_rate"] < 1e-2


def test_a_restored_searcher_suggests_what_the_uninterrupted_one_would(tmp_path):
    sweep = tpe_sweep(num_samples=5)
    whole, _ = drive(BatchedTPE(sweep), random.Random(0), 3)
    first = BatchedTPE(sweep)
    before, running = drive(first, random.Random(0), 3, stop_after=6)  # inside the 2nd batch
    first.save(tmp_path / "state.pkl")
    second = BatchedTPE(sweep)
    second.restore(tmp_path / "state.pkl")
    for trial_id, config in running.items():  # Tune resumes the trials that were running
        second.on_trial_complete(trial_id, {"val_loss": objective(config)})
    after, _ = drive(second, random.Random(1), 3)
    assert before + after == whole


def test_trials_the_saved_state_never_saw_are_adopted_not_suggested_again():
    sweep = tpe_sweep(num_samples=5)
    whole, _ = drive(BatchedTPE(sweep), random.Random(0), 3)
    seen, running = drive(BatchedTPE(sweep), random.Random(0), 3, stop_after=6)
    fresh = BatchedTPE(sweep)  # its saved state predates every trial
    for i, config in enumerate(seen):
        trial_id = f"t{i}"
        ended = trial_id not in running
        fresh.adopt(trial_id, config, {"val_loss": objective(config)} if ended else None, ended)
    for trial_id, config in running.items():
        fresh.on_trial_complete(trial_id, {"val_loss": objective(config)})
    rest, _ = drive(fresh, random.Random(2), 3)
    assert sorted(map(slot_of, seen + rest)) == sorted(map(slot_of, whole))
    by_slot = {slot_of(c): c for c in whole}
    assert all(by_slot[slot_of(c)] == c for c in rest)


def test_dry_run_prints_the_plan_and_the_first_batch(tmp_path, capsys):
    import ray

    sweep_file = tmp_path / "tpe.yaml"
    sweep_file.write_text((CONFIGS / "search.yaml").read_text())
    for name in ("train_config.yaml", "data_config.yaml"):
        (tmp_path / name).write_text((CONFIGS / name).read_text())
    args = ["--config", str(sweep_file), "--dry-run", "--gpus", "0", "--storage", str(tmp_path)]
    assert sweep_main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("48 trials (TPE: 16 points in 4 batches of 4, each point at 3 seeds")
    assert out[1].split()[:4] == ["trial", "suggestion", "seed", "replicate"]
    assert out[-1] == "placement: a process per trial on the CPUs (group_width 1)"
    rows = [line.split() for line in out[2:-1]]
    assert [(int(r[1]), int(r[2])) for r in rows] == [(p, s) for p in range(4) for s in range(3)]
    first = known_trials(load_sweep(sweep_file))
    assert [float(r[4]) for r in rows] == pytest.approx(
        [c["train"]["learning_rate"] for c in first], rel=1e-5
    )
    assert not ray.is_initialized()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data_config.yaml",
        "tpe.yaml",
        "train_config.yaml",
    ]


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("searcher: optuna", "searcher: expected a mapping"),
        ("searcher: {type: tpe}", "searcher.type: got 'tpe'; allowed: random, optuna"),
        ("searcher: {type: optuna, batch: 4}", "searcher.batch: unknown key; did you mean"),
        ("searcher: {type: optuna, batch_size: 0}", "searcher.batch_size: got 0; allowed"),
        ("searcher: {type: random, batch_size: 4}", "searcher.batch_size: only for type: optuna"),
        ("searcher: {type: optuna}", "searcher.type: optuna needs a search block"),
        (
            "searcher: {type: optuna}\nsearch: {model.z_i_dim: {grid: [4, 8]}}",
            "search.model.z_i_dim: grid is not for searcher.type: optuna",
        ),
        (
            "searcher: {type: optuna}\nsearch: {learning_rate: {uniform: [0.001, 0.01]}}\n"
            "seeds: [0]\nscheduler: {type: asha}",
            "scheduler: ASHA stops trials by which results arrive first",
        ),
        ("scheduler: {type: asha}", "scheduler: ASHA stops each trial on its own"),
    ],
)
def test_a_bad_searcher_is_one_line_and_exit_2(tmp_path, capsys, entry, fragment):
    smoke = (CONFIGS / "smoke.yaml").read_text()
    for name in ("train_config.yaml", "data_config.yaml"):
        smoke = smoke.replace(f": {name}", f": {CONFIGS / name}")
    if "seeds:" in entry:  # the entry gives its own
        smoke = smoke.replace("seeds: [0, 1]\n", "")
    sweep_file = tmp_path / "bad.yaml"
    sweep_file.write_text(f"{smoke}{entry}\n")
    assert sweep_main(["--config", str(sweep_file), "--dry-run", "--gpus", "0"]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line.startswith(f"invae-sweep: error: {sweep_file}: {fragment}"), line
    assert "Traceback" not in out + err


# --- end to end, on the shared Ray --------------------------------------------------------


E2E = {"num_samples": 2, "searcher.batch_size": 1}  # 2 batches of one point, 4 trials each


def trials_by_slot(summary):
    return {
        (t.suggestion, t.seed, t.replicate): (json.dumps(t.params), t.fingerprint)
        for t in summary.trials
    }


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("tpe")
    sweep = tpe_sweep(storage, "first", **E2E)
    return run_sweep(sweep, DriverOptions(gpus=0)), storage / "first"


@pytest.mark.ray
def test_an_adaptive_sweep_run_twice_gives_the_same_trials(ray_session, uninterrupted, tmp_path):
    outcome, folder = uninterrupted
    summary = outcome.summary
    assert summary.n_completed == summary.n_trials == 2 * 2 * 2
    by_slot = trials_by_slot(summary)
    assert sorted(by_slot) == [(p, s, r) for p in range(2) for s in (0, 1) for r in (0, 1)]
    for point in range(2):
        for seed in (0, 1):  # replicates: one config, the same bits
            assert by_slot[(point, seed, 0)] == by_slot[(point, seed, 1)]
    assert outcome.verification.verdict == "PASS"
    # the report shows the search: each point in suggestion order, its spread, the best point
    assert [g.suggestion for g in summary.groups] == [0, 1]
    assert all(g.seeds == (0, 1) and g.n_trials == 4 for g in summary.groups)
    assert summary.best_point == min(summary.groups, key=lambda g: g.mean)
    recorded = json.loads((folder / "summary.json").read_text())
    assert recorded["best_point"]["suggestion"] == summary.best_point.suggestion
    assert "Best point (mean over 2 seeds): suggestion" in (folder / "report.md").read_text()

    again = run_sweep(tpe_sweep(tmp_path, "again", **E2E), DriverOptions(gpus=0)).summary
    assert trials_by_slot(again) == by_slot


class InterruptOnce(tune.Callback):
    """Ctrl-C after the ``after``-th trial ends, once (a resumed sweep restores this too)."""

    def __init__(self, marker, after):
        self.marker, self.after, self.ended = marker, after, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        if self.ended == self.after and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.ray
def test_an_interrupted_adaptive_sweep_resumes_to_the_same_trials(
    ray_session, uninterrupted, tmp_path, monkeypatch
):
    sweep = tpe_sweep(tmp_path, "resumed", **E2E)
    interrupt = InterruptOnce(tmp_path / "interrupted", after=3)  # inside the first batch
    with pytest.raises(SweepInterrupted):
        run_sweep(sweep, DriverOptions(gpus=0), extra_callbacks=[interrupt])
    assert not (tmp_path / "resumed" / "summary.json").exists()
    restored = []
    restore = BatchedTPE.restore
    monkeypatch.setattr(
        BatchedTPE, "restore", lambda self, path: restored.append(path) or restore(self, path)
    )
    again = InterruptOnce(tmp_path / "interrupted-again", after=1)  # Ctrl-C of the resumed run
    with pytest.raises(SweepInterrupted):
        run_sweep(sweep, DriverOptions(gpus=0, resume=True), extra_callbacks=[again])
    assert not (tmp_path / "resumed" / "summary.json").exists()
    resumed = run_sweep(sweep, DriverOptions(gpus=0, resume=True)).summary
    assert len(restored) == 2  # Tune handed each resumed run the searcher's saved state
    assert trials_by_slot(resumed) == trials_by_slot(uninterrupted[0].summary)
    assert verify_main([str(tmp_path / "resumed")]) == 0


def test_an_audit_of_a_tpe_sweep_file_audits_one_config():
    from sweeper.audit import audit_sweep

    audit = audit_sweep(load_sweep(CONFIGS / "search.yaml"), repeats=2)
    assert audit.spec.searcher.type == "random" and audit.spec.n_trials == 2
