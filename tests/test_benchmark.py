"""The scIB benchmark (scib-metrics) of a sweep's best trials, in the sweep and on demand."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from sweeper.benchmark.records import BENCHMARK_DIR, Benchmark
from sweeper.benchmark.report import benchmark_blocks
from sweeper.cli import benchmark_main
from sweeper.results import load_summary
from sweeper.storage import SweepFolder
from sweeper.verify.seal import SEAL_FILE, FolderReader, check_seal, parse_manifest
from tests.wandb_records import offline_runs

SMOKE = Path(__file__).parents[1] / "configs" / "smoke.yaml"
# One seed, two replicates: the smallest sweep whose replicates verify.
SMALL = {"seeds": [0], "replicates": 2, "outputs.best_n": 1, "wandb.mode": "offline"}
SCIB_COLUMNS = ("Isolated labels", "KMeans NMI", "iLISI", "KBET", "PCR comparison")


def run_small_sweep(storage, name):
    from sweeper.driver import run_sweep
    from sweeper.options import DriverOptions, apply_options
    from sweeper.spec import load_sweep

    sweep = apply_options(load_sweep(SMOKE, SMALL), DriverOptions(name=name, storage=str(storage)))
    return run_sweep(sweep, DriverOptions(gpus=0))


def without_scib(monkeypatch):
    """Make ``import scib_metrics`` fail, as it does where the extra is not installed."""
    monkeypatch.setitem(sys.modules, "scib_metrics", None)


def sealed_digests(folder):
    return parse_manifest((folder / SEAL_FILE).read_bytes())


@pytest.fixture(scope="module")
def sweeps(ray_session, tmp_path_factory):
    """Two finished smoke sweeps: one with scib-metrics, one made as if it were not installed."""
    storage = tmp_path_factory.mktemp("sweeps")
    with pytest.MonkeyPatch.context() as monkeypatch:
        without_scib(monkeypatch)
        without = run_small_sweep(storage, "without")
    return {"with": run_small_sweep(storage, "with"), "without": without, "storage": storage}


@pytest.mark.ray
def test_the_sweep_puts_its_best_trials_scib_table_in_report_and_summary(sweeps):
    outcome, folder = sweeps["with"], sweeps["storage"] / "with"
    assert outcome.summary.outputs.error is None and outcome.verification.exit_code == 0
    benchmark = load_summary(folder).outputs.benchmark  # as summary.json has it
    assert benchmark.absent is None and benchmark.library.startswith("scib-metrics ")
    (trial,) = benchmark.trials
    assert trial.trial_id == outcome.summary.best_trial
    # outputs.baselines: [] (configs/smoke.yaml): no trained baseline, none said absent
    assert sorted(row.embedding for row in trial.rows) == ["PCA", "inVAE"] and trial.absent == ()
    for row in trial.rows:
        assert set(SCIB_COLUMNS) <= set(row.metrics)
        assert row.total == pytest.approx(0.6 * row.bio_conservation + 0.4 * row.batch_correction)
    assert trial.n_cells == 400 and trial.n_epochs == 5
    report = (folder / "report.md").read_text()
    assert "scIB benchmark of every cell" in report and "KMeans NMI" in report
    assert f"{trial.folder}/scib_results.png" in report
    assert "data:image/png;base64," in (folder / "report.html").read_text()
    for name in ("scib_results.csv", "scib_results.png", "embeddings.h5ad", "benchmark.json"):
        assert f"{trial.folder}/{name}" in sealed_digests(folder)  # part of the seal
    assert check_seal(FolderReader(SweepFolder(folder))).intact


@pytest.mark.ray
def test_without_scib_metrics_the_sweep_succeeds_and_says_why(sweeps):
    outcome, folder = sweeps["without"], sweeps["storage"] / "without"
    assert outcome.summary.outputs.error is None and outcome.verification.exit_code == 0
    benchmark = load_summary(folder).outputs.benchmark
    assert benchmark.trials == () and "scib-metrics is not installed" in benchmark.absent
    lines = [line for line in (folder / "report.md").read_text().splitlines() if "scIB" in line]
    assert any("No scIB table: scib-metrics is not installed" in line for line in lines)
    assert not (folder / BENCHMARK_DIR).exists()


@pytest.mark.ray
def test_invae_benchmark_adds_the_table_to_a_finished_sweep_and_reseals(sweeps, tmp_path, capsys):
    folder = tmp_path / "without"
    shutil.copytree(sweeps["storage"] / "without", folder)
    before = sealed_digests(folder)
    assert benchmark_main([str(folder), "--baselines", "FinVAE", "scVI"]) == 0
    out = capsys.readouterr().out
    assert "scIB total" in out and "sealed anew" in out
    summary = load_summary(folder)
    (trial,) = summary.outputs.benchmark.trials
    assert trial.trial_id == summary.best_trial
    names = [row.embedding for row in trial.rows]
    assert {"inVAE", "PCA"} <= set(names)
    assert "scVI" in names or any(line.startswith("scVI:") for line in trial.absent)
    assert "FinVAE" in names or any(line.startswith("FinVAE:") for line in trial.absent)
    assert "scIB benchmark of every cell" in (folder / "report.md").read_text()
    after = sealed_digests(folder)
    rewritten = {"summary.json", "report.md", "report.html"}
    for path, digest in before.items():  # nothing of the trials changed; only files added
        if path not in rewritten:
            assert after[path] == digest, path
    assert {p for p in set(after) - set(before)} == {
        f"{trial.folder}/{name}"
        for name in ("scib_results.csv", "scib_results.png", "embeddings.h5ad", "benchmark.json")
    }
    assert check_seal(FolderReader(SweepFolder(folder))).intact
    (run,) = [r for r in offline_runs(folder / "wandb").values() if r.job_type == "benchmark"]
    (invae,) = [row for row in trial.rows if row.embedding == "inVAE"]
    assert run.summary[f"scib/{trial.trial_id}/inVAE/Total"] == pytest.approx(invae.total)


@pytest.mark.ray
def test_invae_benchmark_trains_the_baselines_the_sweep_recorded(sweeps, tmp_path, capsys):
    folder = tmp_path / "without"
    shutil.copytree(sweeps["storage"] / "without", folder)
    assert benchmark_main([str(folder)]) == 0  # sweep.json: outputs.baselines: [] (smoke)
    (trial,) = load_summary(folder).outputs.benchmark.trials
    assert sorted(row.embedding for row in trial.rows) == ["PCA", "inVAE"] and trial.absent == ()


@pytest.mark.ray
def test_invae_benchmark_refuses_a_folder_that_no_longer_matches_its_seal(sweeps, tmp_path, capsys):
    folder = tmp_path / "without"
    shutil.copytree(sweeps["storage"] / "without", folder)
    (folder / "results.csv").write_text("altered\n")
    assert benchmark_main([str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no longer matches its seal" in err
    assert not (folder / BENCHMARK_DIR).exists()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "absent", "absent: no such folder"),
        (lambda p: p, "summary.json: file not found"),
        (lambda p: (p / "summary.json").write_text("{") and p, "corrupt JSON"),
    ],
    ids=["missing folder", "no summary", "corrupt summary"],
)
def test_invae_benchmark_bad_input_is_one_line_exit_2(tmp_path, capsys, make, expected):
    target = make(tmp_path)
    assert benchmark_main([str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("invae-benchmark: error: ")
    assert expected in err


def test_invae_benchmark_refuses_a_repeated_baseline_in_one_line(tmp_path, capsys):
    assert benchmark_main([str(tmp_path), "--baselines", "scVI", "scVI"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("invae-benchmark: error: --baselines")
    assert "distinct" in err and not (tmp_path / BENCHMARK_DIR).exists()


def test_invae_benchmark_without_scib_metrics_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    without_scib(monkeypatch)
    assert benchmark_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'invae-sweep[scib]'" in err


def test_the_report_says_in_one_line_why_the_table_is_absent(tmp_path):
    blocks = benchmark_blocks(SweepFolder(tmp_path), Benchmark(absent="why it is absent"))
    assert [b.markdown() for b in blocks][1:] == ["**No scIB table: why it is absent.**"]
    assert benchmark_blocks(SweepFolder(tmp_path), None) == []


def test_the_benchmark_record_reads_back_from_summary_json(tmp_path):
    from sweeper.benchmark.records import EmbeddingScores, TrialBenchmark
    from sweeper.results import Outputs
    from trainables.schema import config_to_dict, record_from_dict

    row = EmbeddingScores("PCA", "scikit-learn PCA", {"KBET": 0.5}, 0.4, 0.6, 0.48)
    trial = TrialBenchmark("t", "benchmark/t", (row,), ("scVI: absent",), 9, 5, "c", "b", 1.0)
    outputs = Outputs(benchmark=Benchmark("scib-metrics 0", (trial,)))
    raw = json.loads(json.dumps(config_to_dict(outputs)))
    assert record_from_dict(Outputs, raw) == outputs
