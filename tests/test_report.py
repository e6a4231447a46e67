"""The verification report: terminal verdict, markdown and self-contained HTML (no Ray)."""

import base64
import dataclasses
import re

import pytest

from sweeper.plots import MAX_POINTS, replicate_curves_png, thin
from sweeper.report import format_summary, format_table
from sweeper.results import Summary
from sweeper.verify.records import (
    SEVERITY,
    Alteration,
    Comparison,
    Divergence,
    EnvironmentDifference,
    FileProblem,
    GroupVerdict,
    Member,
    MetricDifference,
    SealCheck,
    TensorDifference,
    Verification,
)
from sweeper.verify.report import write_verification_report
from sweeper.verify.seal import SEAL_FILE
from sweeper.verify.verdict import format_verdict, verdict_line
from trainables.run_record import Digests

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CPU_ENV = {
    "hostname": "vm",
    "node_id": "c0c198b97ef5f9192ffaa9fde1ae0601960d4d9917628f5867bfac76",
    "device": "cpu",
    "gpu": None,
    "cuda": None,
    "cudnn": None,
    "torch": "2.13.0+cpu",
    "cpu_threads": 1,
    "deterministic": True,
    "cpu": "x86_64",
    "numpy": "2.4.6",
}
GPU_ENV = CPU_ENV | {"device": "cuda", "gpu": "NVIDIA H100", "cuda": "12.8", "torch": "2.13.0"}
# Copied from a real sweep (/tmp/rs/invae-smoke): seed 0, 3 epochs.
TRAIN_LOSS = [679.490771484375, 666.46796875, 654.404541015625]
VAL_LOSS = [659.990088715789, 657.3747484168829, 654.0198164328002]
TAMPERED_VAL_LOSS = 654.0198174328002  # one epoch's val_loss changed by 1e-6


def member(trial_id, replicate, env=CPU_ENV, status="completed"):
    done = status == "completed"
    return Member(
        trial_id=trial_id,
        replicate=replicate,
        status=status,
        run_json=f"{trial_id}/run.json" if done else None,
        digests=Digests("w", "o", "m") if done else None,
        environment=dict(env) if done else None,
    )


def curve(val_loss=VAL_LOSS):
    return {"epoch": (1, 2, 3), "train_loss": tuple(TRAIN_LOSS), "val_loss": tuple(val_loss)}


def comparison(ref, trial, identical=True, env_diff=None, reasons=(), **more):
    environment = tuple(
        EnvironmentDifference(k, tuple(v), k in reasons) for k, v in (env_diff or {}).items()
    )
    same = {"weights": identical, "optimizer": True, "metrics": identical}
    return Comparison(ref, trial, identical, same, environment, tuple(reasons), **more)


def tensor(name, max_abs_diff, shape=(32, 205)):
    return TensorDifference(name, tuple(shape), 1, max_abs_diff, 0.11098061496586939)


def group(status, members, comparisons, params=None, seed=0, histories=None):
    return GroupVerdict(
        status=status,
        params=params or {},
        seed=seed,
        deterministic=True,
        members=tuple(members),
        histories=histories
        if histories is not None
        else {m.trial_id: curve() for m in members if m.status == "completed"},
        comparisons=tuple(comparisons),
    )


def identical_group(seed=1, params=None):
    a, b = f"s{seed}_0", f"s{seed}_1"
    return group(
        "identical", [member(a, 0), member(b, 1)], [comparison(a, b)], params=params, seed=seed
    )


def diverged_group(tensors=None):
    """The tampered example: one weight and epoch 3's val_loss of replicate 1 changed."""
    first = Divergence(
        epoch=3,
        metrics={
            "val_loss": MetricDifference(
                (VAL_LOSS[2], TAMPERED_VAL_LOSS), 8796093, 1.5290056521536391e-09
            )
        },
    )
    differing = comparison(
        "49ef8_00000",
        "49ef8_00001",
        identical=False,
        first_divergence=first,
        metric_drift={"train_loss": 0.0, "val_loss": 1.5290056521536391e-09},
        differing_tensors=tuple(tensors or [tensor("encoder.0.weight", 0.0010000001639127731)]),
    )
    members = [member("49ef8_00000", 0), member("49ef8_00001", 1)]
    histories = {"49ef8_00000": curve(), "49ef8_00001": curve([*VAL_LOSS[:2], TAMPERED_VAL_LOSS])}
    return group("diverged", members, [differing], histories=histories)


def not_comparable_group():
    env_diff = {k: [CPU_ENV[k], GPU_ENV[k]] for k in ("device", "gpu", "cuda", "torch")}
    first = Divergence(1, {"train_loss": MetricDifference((1.0, 1.0000001), 450359, 1e-7)})
    differing = comparison(
        "cpu_0",
        "gpu_1",
        identical=False,
        env_diff=env_diff,
        reasons=["device", "gpu", "cuda"],
        first_divergence=first,
        metric_drift={"train_loss": 3.5e-6, "val_loss": 2.25e-6},
        differing_tensors=(tensor("decoder.2.bias", 4.5e-7, shape=(120,)),),
    )
    members = [member("cpu_0", 0), member("gpu_1", 1, env=GPU_ENV)]
    return group("not_comparable", members, [differing], seed=2)


def incomplete_group():
    members = [member("inc_0", 0), member("inc_1", 1, status="errored")]
    return group("incomplete", members, [], seed=3)


def altered_group():
    alteration = Alteration(
        ("alt_1/model.pt", "alt_1/run.json"), "weights", "1 of 9 tensors", tensors=("a.weight",)
    )
    members = [member("alt_0", 0), dataclasses.replace(member("alt_1", 1), altered=(alteration,))]
    return group("altered", members, [], seed=4, histories={"alt_0": curve()})


SEAL = SealCheck(SEAL_FILE, True, "ab" * 32, n_sealed=12)


def verification(*groups, seal=SEAL, problems=()):
    counts = {s: sum(g.status == s for g in groups) for s in SEVERITY}
    altered = counts["altered"] or seal.changed or seal.added
    if problems:
        verdict, code = "INCOMPLETE", 2
    elif altered or counts["diverged"]:
        verdict, code = "FAIL", 1
    else:
        verdict, code = ("PASS", 0) if counts["identical"] else ("INCONCLUSIVE", 0)
    return Verification(
        sweep="/tmp/sweep",
        checked_at="2026-11-25T18:21:23+00:00",
        metric="val_loss",
        seal=seal,
        groups=tuple(groups),
        altered=(),
        problems=tuple(problems),
        counts=counts,
        verdict=verdict,
        exit_code=code,
    )


def write(tmp_path, *groups):
    md, page = write_verification_report(verification(*groups), tmp_path)
    return md.read_text(), page.read_text()


def test_existing_table_helpers_still_work():
    assert format_table([{"a": 1, "b": 0.5}]).splitlines() == ["a    b", "1  0.5"]
    assert format_table([]) == "(no rows)"
    summary = Summary("s", "val_loss", "min", 0, 1, 1, 0, None, (), ())
    assert "1/1 trials" in format_summary(summary)


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([identical_group(0), identical_group(1)], "PASS: 2 groups identical"),
        ([diverged_group(), identical_group()], "FAIL: 1 of 2 groups diverged (1 identical)"),
        (
            [identical_group(), not_comparable_group(), incomplete_group()],
            "PASS: 1 of 3 groups identical (1 incomplete, 1 not comparable)",
        ),
        ([not_comparable_group()], "INCONCLUSIVE: none of 1 group compared bit for bit"),
        ([], "INCONCLUSIVE: none of 0 groups compared bit for bit"),
    ],
)
def test_verdict_line(groups, expected):
    assert verdict_line(verification(*groups)).startswith(expected)


def test_verdict_table_puts_the_failure_first_and_locates_it():
    text = format_verdict(verification(identical_group(), diverged_group()))
    seal, header, first, second, _, verdict = text.splitlines()
    assert seal.startswith("seal: ")
    assert "first divergence" in header
    assert first.split()[:3] == ["1", "diverged", "0"]
    assert "epoch 3 val_loss" in first
    assert "0.001" in first
    assert "identical" in second
    assert verdict == "FAIL: 1 of 2 groups diverged (1 identical)"


def test_report_writes_markdown_html_and_a_png_per_group_of_two_curves(tmp_path):
    md, _ = write(tmp_path, identical_group(0), diverged_group(), incomplete_group())
    for i in range(2):
        png = tmp_path / f"verification_group_{i}.png"
        assert png.read_bytes().startswith(PNG_MAGIC)
        assert f"]({png.name})" in md
    assert not (tmp_path / "verification_group_2.png").exists()  # one curve: nothing overlaid
    assert "verification_group_2.png" not in md
    names = [p.name for p in tmp_path.iterdir()]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", n) for n in names)
    assert {"verification.md", "verification.html"} <= set(names)


def test_html_is_self_contained(tmp_path):
    _, page = write(tmp_path, identical_group(), diverged_group())
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "http" not in page
    assert not re.search(r"<script|<link|@import|href=", page)


def test_all_text_is_escaped(tmp_path):
    md, page = write(tmp_path, identical_group(params={"note": "<script>alert(1)</script>"}))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in md


def test_diverged_group_shows_metric_values_and_tensor(tmp_path):
    md, page = write(tmp_path, diverged_group())
    for text in (md, page):
        assert "First divergence at epoch 3" in text
        assert "val_loss" in text
        assert "654.0198164328002" in text  # full precision, both values
        assert "654.0198174328002" in text
        assert "8796093" in text
        assert "encoder.0.weight" in text


def test_differing_tensors_are_sorted_and_capped(tmp_path):
    diverged = diverged_group([tensor(f"layer{i}.weight", float(i)) for i in range(25)])
    md, _ = write(tmp_path, diverged)
    names = re.findall(r"\| (layer\d+\.weight) \|", md)
    assert names == [f"layer{i}.weight" for i in range(24, 4, -1)]
    assert "... and 5 more." in md


def test_not_comparable_group_shows_reasons_and_tolerances(tmp_path):
    md, page = write(tmp_path, not_comparable_group())
    assert "device differs (cpu vs cuda)" in page
    assert "gpu differs (none vs NVIDIA H100)" in page
    assert "not a failure" in page
    assert "3.500e-06" in page  # the train_loss drift
    assert "4.500e-07" in page  # the tensor's max abs diff
    assert page.count('<td class="mark">') == 8  # 4 differing fields, 2 members
    assert "**cuda**" in md


def test_incomplete_group_names_the_missing_member(tmp_path):
    md, page = write(tmp_path, incomplete_group())
    assert "Not completed: inc_1 (errored)." in page
    assert "1 of 2 members completed" in md


@pytest.mark.parametrize(("n", "expected"), [(5, 5), (MAX_POINTS, MAX_POINTS), (10_000, 2000)])
def test_thin_keeps_ends_and_caps_points(n, expected):
    index = thin(n)
    assert len(index) <= expected + 1
    assert index[0] == 0
    assert index[-1] == n - 1


def test_long_histories_still_plot(tmp_path):
    long = diverged_group()
    epochs = list(range(1, 10_001))
    for trial in long.histories:
        long.histories[trial] = {
            "epoch": epochs,
            "train_loss": [1.0 / e for e in epochs],
            "val_loss": [2.0 / e for e in epochs],
        }
    assert replicate_curves_png(long, mark_epoch=3).startswith(PNG_MAGIC)


def test_group_of_fewer_than_two_histories_has_no_figure():
    assert replicate_curves_png(group("incomplete", [], [])) is None
    assert replicate_curves_png(incomplete_group()) is None  # one member completed


@pytest.mark.parametrize(
    ("groups", "seal", "problems", "expected"),
    [
        (
            [altered_group(), identical_group()],
            SEAL,
            (),
            "FAIL: 1 run altered (1 identical)",
        ),
        (
            [identical_group()],
            dataclasses.replace(SEAL, changed=("summary.json",)),
            (),
            "FAIL: 1 file changed since sealing: summary.json (1 identical)",
        ),
        (
            [identical_group()],
            SEAL,
            (FileProblem("/tmp/sweep/t/model.pt", "file not found"),),
            "INCOMPLETE: 1 file missing or unreadable: t/model.pt (1 identical)",
        ),
    ],
)
def test_verdict_line_names_what_was_altered_or_missing(groups, seal, problems, expected):
    assert verdict_line(verification(*groups, seal=seal, problems=problems)) == expected


def test_terminal_verdict_starts_with_the_seal_and_lists_alterations():
    seal = dataclasses.replace(SEAL, changed=("alt_1/model.pt",))
    lines = format_verdict(verification(altered_group(), seal=seal)).splitlines()
    assert lines[0].startswith(f"seal: {SEAL_FILE} sha256 {'ab' * 32}: of 12 sealed files")
    assert "1 changed: alt_1/model.pt" in lines[0]
    assert (
        "altered: alt_1: model.pt, run.json: weights: 1 of 9 tensors (tensors: a.weight)" in lines
    )


def test_report_says_what_is_recomputed_and_shows_alterations(tmp_path):
    seal = dataclasses.replace(SEAL, changed=("alt_1/model.pt",), added=("x.txt",))
    md, page = write_verification_report(verification(altered_group(), seal=seal), tmp_path)
    for text in (md.read_text(), page.read_text()):
        assert "recomputed from the files" in text
        assert "Altered files" in text and "a.weight" in text
        assert "x.txt" in text and "alt_1/model.pt" in text
        assert "Altered, so not compared: alt" in text
