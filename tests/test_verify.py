"""invae-verify on sweep folders built without Ray (the layout of a real sweep), tampered with."""

import dataclasses
import json
import shutil
import subprocess

import pytest
import torch

from sweeper.cli import verify_main
from sweeper.results import (
    BEST_DIR,
    COMPLETED,
    RESULTS_FILE,
    Summary,
    TrialEntry,
    load_summary,
    results_csv,
    seed_groups,
    write_summary,
)
from sweeper.storage import SweepFolder
from sweeper.verify.analysis import verify_sweep
from sweeper.verify.comparison import bit_environment, ulp_distance
from sweeper.verify.records import load_verification
from sweeper.verify.seal import SEAL_FILE, parse_manifest, write_seal
from trainables.config import ModelConfig, TrainConfig
from trainables.run_record import TrialInfo, load_run, write_run
from trainables.train import train

BASE = TrainConfig(n_epochs=3, batch_size=64, device="cpu", model=ModelConfig(hidden=(16,)))


def write_sweep(folder, runs):
    """Write runs as a finished, sealed sweep: ``runs`` maps trial id -> (result, replicate)."""
    trials = []
    for trial_id, (result, replicate) in runs.items():
        trial_dir = f"trial_{trial_id}"
        write_run(result, folder / trial_dir, trial=TrialInfo(trial_id, replicate))
        record = load_run(folder / trial_dir)
        trials.append(
            TrialEntry(
                trial_id=trial_id,
                trial_dir=trial_dir,
                status=COMPLETED,
                seed=result.train_config.seed,
                replicate=replicate,
                params={"learning_rate": result.train_config.learning_rate},
                epochs=len(result.history),
                restored=False,
                metrics=record.final_result(),
                fingerprint=record.fingerprint.digests,
                environment=bit_environment(record),
                run_json=f"{trial_dir}/run.json",
            )
        )
    summary = Summary(
        name=folder.name,
        metric="val_loss",
        mode="min",
        searcher_seed=0,
        n_trials=len(trials),
        n_completed=len(trials),
        n_errored=0,
        best_trial=trials[0].trial_id,
        groups=seed_groups(trials, "val_loss"),
        trials=tuple(trials),
    )
    sweep = SweepFolder(folder)
    for name in ("run.json", "model.pt"):
        sweep.copy(f"{trials[0].trial_dir}/{name}", f"{BEST_DIR}/{name}")
    sweep.write_bytes(RESULTS_FILE, results_csv(trials).encode())
    write_summary(sweep, summary)
    write_seal(sweep)


@pytest.fixture(scope="module")
def results(tiny_data):
    return {seed: train(dataclasses.replace(BASE, seed=seed), tiny_data) for seed in (1, 2)}


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory, results):
    """Seed 1 x 2 replicates and seed 2 x 2 replicates, sealed as a finished sweep."""
    folder = tmp_path_factory.mktemp("sweep")
    runs = {f"t{seed}{r}": (results[seed], r) for seed in (1, 2) for r in (0, 1)}
    write_sweep(folder, runs)
    return folder


@pytest.fixture
def sweep(sweep_folder, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_folder, copy)
    return copy


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_model(path, change):
    saved = torch.load(path, weights_only=True)
    change(saved)
    torch.save(saved, path)


def next_float(x):
    return float(torch.nextafter(torch.tensor(x, dtype=torch.float64), torch.tensor(1e300)))


def group_of(verification, seed):
    return next(g for g in verification.groups if g.seed == seed)


def run_verify(sweep, capsys):
    code = verify_main([str(sweep)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_an_untouched_sweep_passes(sweep, capsys):
    code, out, _ = run_verify(sweep, capsys)
    assert code == 0
    assert "PASS: 2 groups identical" in out
    assert f"seal: {SEAL_FILE} sha256 " in out and "intact" in out
    for name in ("verification.json", "verification.md", "verification.html"):
        assert (sweep / name).exists()
    assert run_verify(sweep, capsys)[0] == 0  # its own outputs are not sealed files
    (sweep / "wandb" / "offline-run-x").mkdir(parents=True)  # nor is W&B's folder
    (sweep / "wandb" / "offline-run-x" / "run-x.wandb.synced").write_text("")
    assert run_verify(sweep, capsys)[0] == 0


def test_the_seal_is_a_sha256sum_manifest_of_every_result_file(sweep):
    sealed = parse_manifest((sweep / SEAL_FILE).read_bytes())
    assert {"summary.json", "results.csv", "best/model.pt", "trial_t10/model.pt"} <= set(sealed)
    assert "trial_t21/run.json" in sealed and SEAL_FILE not in sealed
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "-c", "--quiet", SEAL_FILE], cwd=sweep)
        assert check.returncode == 0


def test_a_flipped_weight_bit_in_a_validly_saved_model_is_altered(sweep, capsys):
    def flip(saved):
        weight = saved["model"]["dec_freq.weight"]
        weight.view(torch.int32)[2, 3] ^= 1  # the lowest mantissa bit of one value

    edit_model(sweep / "trial_t11" / "model.pt", flip)
    verification = verify_sweep(sweep)
    group = group_of(verification, 1)
    assert group.status == "altered"
    (member,) = [m for m in group.members if m.altered]
    (alteration,) = member.altered
    assert alteration.part == "weights" and alteration.tensors == ("dec_freq.weight",)
    assert "trial_t11/model.pt" in alteration.files
    assert verification.seal.changed == ("trial_t11/model.pt",)
    assert group.comparisons == ()  # the altered run is compared with nothing
    code, out, _ = run_verify(sweep, capsys)
    assert code == 1
    assert "trial_t11: model.pt, run.json: weights" in out and "dec_freq.weight" in out
    assert "diverged" not in out.split("\n\n")[-1]


def test_a_weight_changed_by_one_and_saved_again_is_altered(sweep, capsys):
    edit_model(sweep / "trial_t20" / "model.pt", lambda s: s["model"]["enc_mean.bias"].add_(1.0))
    code, out, _ = run_verify(sweep, capsys)
    assert code == 1 and "FAIL" in out and "1 run altered" in out
    assert "enc_mean.bias" in out


def test_model_files_swapped_between_groups_are_both_altered(sweep, capsys):
    a, b = sweep / "trial_t10" / "model.pt", sweep / "trial_t21" / "model.pt"
    payload_a, payload_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(payload_b)
    b.write_bytes(payload_a)
    verification = verify_sweep(sweep)
    for seed in (1, 2):
        (member,) = [m for m in group_of(verification, seed).members if m.altered]
        assert {x.part for x in member.altered} >= {"weights", "optimizer state", "config"}
    assert verification.exit_code == 1
    assert run_verify(sweep, capsys)[0] == 1


def test_a_replicate_given_another_seeds_weights_is_altered(sweep, capsys):
    shutil.copy(sweep / "trial_t20" / "model.pt", sweep / "trial_t11" / "model.pt")
    group = group_of(verify_sweep(sweep), 1)
    assert group.status == "altered"
    code, out, _ = run_verify(sweep, capsys)
    assert code == 1 and "PASS" not in out


def test_a_deleted_model_file_is_incomplete_exit_2_naming_it(sweep, capsys):
    (sweep / "trial_t20" / "model.pt").unlink()
    verification = verify_sweep(sweep)
    assert group_of(verification, 2).status == "incomplete"
    assert verification.seal.missing == ("trial_t20/model.pt",)
    code, out, _ = run_verify(sweep, capsys)
    assert code == 2
    verdict = out.split("\n\n")[-1]
    assert verdict.startswith("INCOMPLETE") and "trial_t20/model.pt" in verdict
    assert "PASS" not in out


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"garbage"),
        lambda p: p.write_bytes(p.read_bytes()[:1000]),  # truncated
        lambda p: torch.save({"not": "a model"}, p),
    ],
)
def test_an_unreadable_model_file_is_exit_2_naming_it(sweep, capsys, damage):
    damage(sweep / "trial_t21" / "model.pt")
    code, out, _ = run_verify(sweep, capsys)
    assert code == 2
    assert "missing or unreadable:" in out and "trial_t21/model.pt" in out


def test_one_ulp_in_one_epoch_of_the_history_is_altered_metrics_at_that_epoch(sweep, capsys):
    def tamper(record):
        record["history"][1]["val_loss"] = next_float(record["history"][1]["val_loss"])

    edit_json(sweep / "trial_t11" / "run.json", tamper)
    (member,) = [m for m in group_of(verify_sweep(sweep), 1).members if m.altered]
    (alteration,) = member.altered
    assert alteration.part == "metrics" and alteration.epochs == (2,)
    code, out, _ = run_verify(sweep, capsys)
    assert code == 1 and "epochs: 2" in out


def test_an_edited_stored_digest_with_the_same_weights_is_altered_not_diverged(sweep, capsys):
    edit_json(sweep / "trial_t21" / "run.json", lambda r: r["fingerprint"].update(weights="0" * 64))
    verification = verify_sweep(sweep)
    group = group_of(verification, 2)
    (member,) = [m for m in group.members if m.altered]
    (alteration,) = member.altered
    assert alteration.part == "fingerprint" and alteration.files == ("trial_t21/run.json",)
    assert verification.counts["diverged"] == 0
    code, out, _ = run_verify(sweep, capsys)
    assert code == 1 and "recorded fingerprint was changed" in out


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("summary.json", lambda p: edit_json(p, lambda s: s["groups"][0].update(mean=1.0))),
        ("results.csv", lambda p: p.write_text(p.read_text().replace(",1,", ",2,", 1))),
        ("best/run.json", lambda p: edit_json(p, lambda r: r.update(finished_at="never"))),
    ],
)
def test_an_edited_sweep_file_is_named_as_changed(sweep, capsys, name, change):
    change(sweep / name)
    verification = verify_sweep(sweep)
    assert name in verification.seal.changed
    code, out, _ = run_verify(sweep, capsys)
    assert code == 1 and f"changed since sealing: {name}" in out.split("\n\n")[-1]


def test_an_edited_embedding_is_named_as_changed(sweep, capsys):
    (sweep / "trial_t10" / "embedding.h5ad").write_bytes(b"an embedding")
    write_seal(SweepFolder(sweep))
    (sweep / "trial_t10" / "embedding.h5ad").write_bytes(b"another embedding")
    code, out, _ = run_verify(sweep, capsys)
    assert code == 1 and "changed since sealing: trial_t10/embedding.h5ad" in out


def test_a_file_added_to_a_trial_folder_is_named(sweep, capsys):
    (sweep / "trial_t10" / "extra.pt").write_bytes(b"x")
    assert verify_sweep(sweep).seal.added == ("trial_t10/extra.pt",)
    code, out, _ = run_verify(sweep, capsys)
    assert code == 1 and "added since sealing: trial_t10/extra.pt" in out


def test_a_best_copy_that_is_not_the_best_trial_is_altered(sweep, capsys):
    shutil.copy(sweep / "trial_t20" / "model.pt", sweep / "best" / "model.pt")
    write_seal(SweepFolder(sweep))  # even resealed: best/ must be the best trial's bytes
    verification = verify_sweep(sweep)
    assert [a.part for a in verification.altered] == ["best copy"]
    assert run_verify(sweep, capsys)[0] == 1


def test_a_summary_that_misstates_a_trial_is_altered_even_when_resealed(sweep, capsys):
    edit_json(sweep / "summary.json", lambda s: s["trials"][1].update(seed=2))
    write_seal(SweepFolder(sweep))
    verification = verify_sweep(sweep)
    assert any(a.part == "summary" and "seed" in a.detail for a in verification.altered)
    assert run_verify(sweep, capsys)[0] == 1


def test_an_unsealed_folder_is_never_a_pass(sweep, capsys):
    (sweep / SEAL_FILE).unlink()
    code, out, _ = run_verify(sweep, capsys)
    assert code == 2 and f"{SEAL_FILE}: not found" in out and "PASS" not in out


def test_a_corrupt_manifest_is_exit_2(sweep, capsys):
    (sweep / SEAL_FILE).write_text("not a manifest\n")
    code, out, _ = run_verify(sweep, capsys)
    assert code == 2 and "line 1" in out


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{}", "key 'schema_version': missing"),
        ("[]", "expected a mapping"),
        ('{"trunc', "corrupt JSON"),
    ],
)
def test_a_run_json_of_the_wrong_shape_is_exit_2_naming_file_and_key(
    sweep, capsys, content, fragment
):
    (sweep / "trial_t20" / "run.json").write_text(content)
    code, out, _ = run_verify(sweep, capsys)
    assert code == 2
    line = next(x for x in out.splitlines() if x.startswith("missing or unreadable"))
    assert "trial_t20/run.json" in line and fragment in line


def test_a_run_json_missing_one_key_names_it(sweep, capsys):
    edit_json(sweep / "trial_t20" / "run.json", lambda r: r["seeding"].pop("deterministic"))
    code, out, _ = run_verify(sweep, capsys)
    assert code == 2 and "key 'seeding.deterministic': missing" in out


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda s: (s / "summary.json").unlink(), "summary.json: not found"),
        (lambda s: (s / "summary.json").write_text("{not json"), "summary.json: corrupt JSON"),
        (lambda s: (s / "summary.json").write_text("[1, 2]"), "summary.json: not a valid"),
    ],
)
def test_an_unusable_summary_is_one_line_exit_2(sweep, capsys, damage, fragment):
    damage(sweep)
    code, out, err = run_verify(sweep, capsys)
    assert code == 2 and not out
    assert err.startswith("invae-verify: error:") and fragment in err and err.count("\n") == 1


def test_a_replicate_with_other_bits_diverged_and_is_located(
    sweep_folder, results, tmp_path, capsys
):
    """Files that agree with their record, but not with the replicate's: a real divergence."""
    other = dataclasses.replace(results[2], train_config=results[1].train_config)
    folder = tmp_path / "diverged"
    write_sweep(folder, {"a": (results[1], 0), "b": (other, 1)})
    verification = verify_sweep(folder)
    (group,) = verification.groups
    assert group.status == "diverged" and verification.exit_code == 1
    (comparison,) = group.comparisons
    assert comparison.first_divergence.epoch == 1
    assert comparison.differing_tensors and comparison.differing_tensors[0].max_abs_diff > 0
    code, out, _ = run_verify(folder, capsys)
    assert code == 1 and "FAIL: 1 of 1 group diverged" in out


def test_a_replicate_on_another_gpu_driver_is_not_comparable_naming_it(results, tmp_path):
    other = dataclasses.replace(
        results[2],
        train_config=results[1].train_config,
        model_info={**results[2].model_info, "device": "cuda:0"},
        environment={
            **results[2].environment,
            "system": {**results[2].environment["system"], "nvidia_driver": "580.1"},
        },
    )
    reference = dataclasses.replace(
        results[1],
        model_info={**results[1].model_info, "device": "cuda:0"},
        environment={
            **results[1].environment,
            "system": {**results[1].environment["system"], "nvidia_driver": "570.9"},
        },
    )
    folder = tmp_path / "drivers"
    write_sweep(folder, {"a": (reference, 0), "b": (other, 1)})
    verification = verify_sweep(folder)
    (group,) = verification.groups
    assert group.status == "not_comparable" and verification.exit_code == 0
    assert group.comparisons[0].not_comparable_because == ("nvidia_driver",)


def test_a_cpu_replicate_in_another_mkl_mode_is_not_comparable_naming_it(results, tmp_path):
    other = dataclasses.replace(
        results[2],
        train_config=results[1].train_config,
        seeding={**results[2].seeding, "mkl_cbwr": "COMPATIBLE"},
    )
    folder = tmp_path / "mkl"
    write_sweep(folder, {"a": (results[1], 0), "b": (other, 1)})
    verification = verify_sweep(folder)
    (group,) = verification.groups
    assert group.status == "not_comparable" and verification.exit_code == 0
    assert group.comparisons[0].not_comparable_because == ("mkl_cbwr",)


def test_a_member_that_did_not_complete_makes_its_group_incomplete(sweep):
    def errored(summary):
        summary["trials"][1].update(status="errored", run_json=None, fingerprint=None)

    edit_json(sweep / "summary.json", errored)
    write_seal(SweepFolder(sweep))
    verification = verify_sweep(sweep)
    assert group_of(verification, 1).status == "incomplete"
    assert verification.verdict == "PASS" and verification.exit_code == 0


def test_runs_recorded_before_finer_digests_and_new_fields_still_verify(sweep, capsys):
    def older(record):
        for key in ("optimizers", "epochs"):
            record["fingerprint"].pop(key)
        for key in ("gpu_sm_counts", "cublas_version", "nvidia_driver", "cpu_capability"):
            record["environment"]["system"].pop(key)

    for trial in ("t10", "t11"):
        edit_json(sweep / f"trial_{trial}" / "run.json", older)
    shutil.copy(sweep / "trial_t10" / "run.json", sweep / "best" / "run.json")
    write_seal(SweepFolder(sweep))
    assert run_verify(sweep, capsys)[0] == 0


def test_verification_json_reads_back_as_the_same_record(sweep):
    edit_model(sweep / "trial_t20" / "model.pt", lambda s: s["model"]["enc_mean.bias"].add_(1.0))
    verify_main([str(sweep)])
    back = load_verification(sweep / "verification.json")
    fresh = verify_sweep(sweep)
    assert dataclasses.replace(back, checked_at="") == dataclasses.replace(fresh, checked_at="")


def test_the_summary_reads_back_typed(sweep):
    summary = load_summary(sweep)
    assert (
        summary.trial("t10").fingerprint.weights
        == load_run(sweep / "trial_t10").fingerprint.weights
    )


def test_the_manifest_escapes_names_as_sha256sum_does(tmp_path):
    folder = tmp_path / "odd"
    (folder / "a\\b").mkdir(parents=True)
    (folder / "a\\b" / "new\nline.txt").write_text("x")
    (folder / "plain name.txt").write_text("y")
    write_seal(SweepFolder(folder))
    sealed = parse_manifest((folder / SEAL_FILE).read_bytes())
    assert set(sealed) == {"a\\b/new\nline.txt", "plain name.txt"}


@pytest.mark.parametrize(
    ("x", "y", "ulps"),
    [(1.0, 1.0, 0), (1.0, 1.0000000000000002, 1), (-0.0, 0.0, 0), (1.0, float("nan"), None)],
)
def test_ulp_distance(x, y, ulps):
    assert ulp_distance(x, y) == ulps
