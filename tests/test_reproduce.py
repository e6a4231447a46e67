"""invae-reproduce: rerun a recorded run here and compare, on fingerprints recomputed from files."""

import json

import pytest
import torch

from sweeper.cli import reproduce_main
from trainables.config import ModelConfig, TrainConfig
from trainables.standalone import run_standalone

TRAIN = TrainConfig(n_epochs=2, batch_size=64, device="cpu", model=ModelConfig(hidden=(8,)))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, tiny_data_config):
    folder = tmp_path_factory.mktemp("recorded")
    run_standalone(TRAIN, tiny_data_config, folder)
    return folder


@pytest.fixture
def run_dir(recorded, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("run.json", "model.pt"):
        (copy / name).write_bytes((recorded / name).read_bytes())
    return copy


def reproduce(run_dir, tmp_path, capsys):
    code = reproduce_main([str(run_dir), "--out", str(tmp_path / "rerun")])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_a_run_is_reproduced_bit_for_bit(run_dir, tmp_path, capsys):
    code, out, _ = reproduce(run_dir, tmp_path, capsys)
    assert code == 0
    assert "environment: as recorded" in out and "REPRODUCED bit for bit" in out
    assert (tmp_path / "rerun" / "run.json").exists()


def test_a_recorded_run_whose_files_disagree_is_not_reproduced(run_dir, tmp_path, capsys):
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    saved["model"]["enc_mean.bias"] += 1.0
    torch.save(saved, run_dir / "model.pt")
    code, out, _ = reproduce(run_dir, tmp_path, capsys)
    assert code == 1
    assert "recorded run altered: model.pt, run.json: weights" in out
    assert "weights: DIFFERENT" in out  # the rerun has the recorded bits, not the edited ones
    assert "NOT REPRODUCED" in out


def test_the_environment_difference_names_the_recorded_fields(run_dir, tmp_path, capsys):
    record = json.loads((run_dir / "run.json").read_text())
    record["environment"]["git"]["commit"] = "0" * 40
    (run_dir / "run.json").write_text(json.dumps(record))
    code, out, _ = reproduce(run_dir, tmp_path, capsys)
    assert code == 0  # the bits are reproduced; the code's commit was recorded otherwise
    assert "differs from the record" in out and "git_commit" in out


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("{}", "key 'schema_version': missing"), ("[]", "expected a mapping"), ("x", "corrupt")],
)
def test_a_run_json_of_the_wrong_shape_is_one_line_exit_2(
    run_dir, tmp_path, capsys, content, fragment
):
    (run_dir / "run.json").write_text(content)
    code, out, err = reproduce(run_dir, tmp_path, capsys)
    assert code == 2 and not out
    assert err.startswith("invae-reproduce: error:") and fragment in err and err.count("\n") == 1


def test_a_missing_model_file_is_named(run_dir, tmp_path, capsys):
    (run_dir / "model.pt").unlink()
    code, _, err = reproduce(run_dir, tmp_path, capsys)
    assert code == 2 and "model.pt: file not found" in err
