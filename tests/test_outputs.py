"""Post-sweep outputs: PCA baseline, best trials, the sweep report (no Ray)."""

import math
from pathlib import Path

import pytest

from sweeper.outputs import best_trials, pca_baseline, write_sweep_report
from sweeper.results import Outputs, SeedGroup, Summary, TrialEntry
from sweeper.spec import load_sweep
from sweeper.storage import SweepFolder
from trainables.integration import INTEGRATION_KEYS
from trainables.schema import ConfigError


def trial(trial_id, seed, value, status="completed", lr=1e-3):
    return TrialEntry(
        trial_id=trial_id,
        trial_dir=f"trial_{trial_id}",
        status=status,
        seed=seed,
        replicate=0,
        params={"learning_rate": lr},
        epochs=3,
        restored=False,
        metrics={"val_loss": value},
        fingerprint=None,
        environment=None,
        run_json=None,
    )


def summary(trials, metric="val_loss", mode="min"):
    return Summary(
        name="s",
        metric=metric,
        mode=mode,
        searcher_seed=0,
        n_trials=len(trials),
        n_completed=len(trials),
        n_errored=0,
        best_trial=trials[0].trial_id,
        groups=(SeedGroup({"learning_rate": 1e-3}, (0, 1), 2, 1.0, 0.1),),
        trials=tuple(trials),
        outputs=Outputs(baseline_pca={"integration_score": 0.5}),
    )


def test_best_trials_follow_metric_and_mode():
    trials = [
        trial("a", 0, 3.0),
        trial("b", 1, 1.0),
        trial("c", 2, 2.0),
        trial("d", 3, math.nan),
        trial("e", 4, 0.1, status="errored"),
    ]
    assert [t.trial_id for t in best_trials(summary(trials), 2)] == ["b", "c"]
    assert [t.trial_id for t in best_trials(summary(trials, mode="max"), 1)] == ["a"]


def test_pca_baseline_scores_the_validation_cells(tiny_data):
    scores = pca_baseline(tiny_data)
    assert set(scores) == set(INTEGRATION_KEYS)
    assert all(0 <= v <= 1 for v in scores.values())


def test_sweep_report_has_figures_and_the_pca_row(tmp_path):
    folder = SweepFolder(tmp_path)
    md, html = write_sweep_report(
        folder, summary([trial("a", 0, 1.0), trial("b", 1, 1.2, lr=1e-2)])
    )
    text = Path(md).read_text()
    assert "PCA of log-normalised counts" in text
    assert "metric_vs_params.png" in text and "seed_spread.png" in text
    assert "data:image/png;base64," in Path(html).read_text()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"metric": "integration_score"}, "mode"),
        (
            {"metric": "integration_score", "mode": "max", "scheduler": {"type": "asha"}},
            "scheduler",
        ),
        ({"outputs.best_n": -1}, "outputs.best_n"),
        ({"outputs.baselines": ["scvi"]}, "outputs.baselines"),
        ({"outputs.baselines": ["scVI", "scVI"]}, "outputs.baselines"),
    ],
)
def test_integration_metric_rules(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_sweep(Path(__file__).parents[1] / "configs" / "smoke.yaml", overrides)
    assert info.value.key == key
