"""Ctrl-C of a sweep and ``--resume``: which trials count as unfinished, on the shared Ray."""

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray import tune

from sweeper.driver import ExperimentEnd, SweepInterrupted, run_trials
from sweeper.options import DriverOptions, apply_options
from sweeper.spec import load_sweep

SMOKE = Path(__file__).parents[1] / "configs" / "smoke.yaml"
TINY = {
    "seeds": [0],
    "train.n_epochs": 2,
    "outputs.best_n": 0,
    "wandb.mode": "disabled",
    "max_concurrent_trials": 1,  # in turn: the second trial is unfinished when the first ends
}


def trial(status, done=False):
    return SimpleNamespace(trial_id="t1", status=status, last_result={"done": done})


@pytest.mark.parametrize(
    ("at_start", "at_end", "unfinished"),
    [
        ("TERMINATED", trial("TERMINATED", done=False), 0),  # restored: it ended in a run before
        ("PENDING", trial("TERMINATED", done=True), 0),  # trained to the end in this run
        ("RUNNING", trial("TERMINATED", done=False), 1),  # stopped by Ctrl-C in this run
        ("PENDING", trial("ERROR"), 0),
        ("PENDING", trial("PENDING"), 1),
        (None, trial("RUNNING"), 1),  # suggested during this run
    ],
)
def test_a_trial_is_unfinished_unless_it_ended_in_this_run_or_before(at_start, at_end, unfinished):
    ending = ExperimentEnd(n_trials=1)
    ending.on_step_begin(0, [] if at_start is None else [trial(at_start)])
    ending.on_experiment_end([at_end])
    assert ending.unfinished == unfinished


class InterruptOnce(tune.Callback):
    """Ctrl-C as the first trial ends, in the first run only."""

    def __init__(self):
        self.sent = False

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.ray
def test_resume_counts_a_trial_saved_terminated_without_a_done_result_as_finished(
    ray_session, tmp_path, monkeypatch
):
    # Tune saves its state after every step: always between a trial's last result and Tune's
    # marking it done, so the state records the trial TERMINATED with a last result whose
    # `done` is False (at the default interval, now and then).
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")
    sweep = load_sweep(SMOKE, TINY)
    sweep = apply_options(sweep, DriverOptions(name="interrupted", storage=str(tmp_path)))
    with pytest.raises(SweepInterrupted, match="1 trial"):
        run_trials(sweep, DriverOptions(gpus=0), [InterruptOnce()])
    saved = tune.ExperimentAnalysis(str(tmp_path / "interrupted")).trials
    assert [t.last_result["done"] for t in saved if t.status == "TERMINATED"] == [False]

    try:
        summary = run_trials(sweep, DriverOptions(gpus=0, resume=True))
    except SweepInterrupted as err:  # a KeyboardInterrupt: it would end the whole session
        pytest.fail(f"--resume ended with trials unfinished: {err}")
    assert summary.n_completed == summary.n_trials == 2
