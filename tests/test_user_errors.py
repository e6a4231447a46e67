"""Every user error of every command: exit 2, one line naming the culprit, nothing written.

One row per bad input. Each row runs the command in this process and asserts the exit code,
that stderr is a single ``<prog>: error: ...`` line holding the expected fragment (the file,
option or key and what is allowed), that nothing printed a traceback, and that the test's
folder (holding whatever was written before) is byte for byte as it was.
"""

import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from sweeper.cli import (
    audit_main,
    embed_main,
    reproduce_main,
    sweep_main,
    train_main,
    verify_main,
)

CONFIGS = Path(__file__).parents[1] / "configs"
SMOKE = str(CONFIGS / "smoke.yaml")
KANG = Path(__file__).parent / "data" / "kang_small.h5ad"
TINY = ["--smoke", "--set", "n_epochs=1", "--set", "data.simulation.n_cells=200"]
TINY += ["--set", "data.n_top_genes=100"]
COMMANDS = {
    "invae-train": train_main,
    "invae-sweep": sweep_main,
    "invae-audit": audit_main,
    "invae-verify": verify_main,
    "invae-embed": embed_main,
    "invae-reproduce": reproduce_main,
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_data_config):
    """Files the rows point at: bad configs and data, a finished run, a regular file."""
    from trainables.config import ModelConfig, TrainConfig
    from trainables.standalone import run_standalone

    folder = tmp_path_factory.mktemp("inputs")
    (folder / "empty.yaml").write_text("# nothing here\n")
    (folder / "binary.yaml").write_bytes(bytes(range(256)))
    (folder / "twice.yaml").write_text("n_epochs: 3\nbatch_size: 64\nn_epochs: 5\n")
    (folder / "broken.yaml").write_text("model: {hidden: [64,\n")
    (folder / "unknown.yaml").write_text("n_epoch: 3\n")
    (folder / "a_file").write_text("not a folder\n")
    smoke = Path(SMOKE).read_text()
    for name in ("train_config.yaml", "data_config.yaml"):  # the copies live elsewhere
        smoke = smoke.replace(f": {name}", f": {CONFIGS / name}")
    for name, bad in (("inf", np.inf), ("nan", np.nan)):
        adata = ad.read_h5ad(KANG)
        counts = np.asarray(adata.X.todense() if hasattr(adata.X, "todense") else adata.X)
        counts = counts.astype(np.float32)
        counts[3, 4] = bad
        adata.X = counts
        adata.write_h5ad(folder / f"{name}.h5ad")
        (folder / f"data_{name}.yaml").write_text(
            f"data_path: {folder / name}.h5ad\nbio_keys: [cell_type]\ntech_keys: [condition]\n"
            "n_top_genes: 100\n"
        )
        (folder / f"sweep_{name}.yaml").write_text(
            f"name: bad-data\ntrain_config: {CONFIGS / 'train_config.yaml'}\n"
            f"data_config: data_{name}.yaml\ntrain: {{n_epochs: 1}}\nseeds: [0]\n"
        )
    (folder / "inf_bound.yaml").write_text(
        smoke + "search:\n  learning_rate: {uniform: [0.001, .inf]}\n"
    )
    run = folder / "run"
    train = TrainConfig(n_epochs=1, batch_size=64, device="cpu", model=ModelConfig(hidden=(8,)))
    run_standalone(train, tiny_data_config, run)
    return folder


def row(prog, args, fragment, code=2):
    return pytest.param(prog, args, fragment, code, id=f"{prog} {' '.join(args)}"[:90])


ROWS = [
    # config files
    row("invae-train", ["--config", "/nonexistent/train.yaml"], "train.yaml: file not found"),
    row("invae-train", ["--config", "{in}"], "is a directory"),
    row("invae-train", ["--config", "{in}/binary.yaml"], "binary.yaml: not a text file"),
    row("invae-train", ["--config", "{in}/twice.yaml"], "key 'n_epochs' given twice"),
    row("invae-train", ["--config", "{in}/broken.yaml"], "broken.yaml: invalid YAML"),
    row("invae-train", ["--config", "{in}/unknown.yaml"], "n_epoch: unknown key; did you mean"),
    # --set
    row("invae-train", ["--set", "novalue"], "--set: novalue: expected key=value"),
    row("invae-train", ["--set", "model.hidden=[64,"], "--set: model.hidden: '[64,' is not valid"),
    row("invae-train", ["--set", "nosuch.key=3"], "--set: nosuch.key: unknown key"),
    row("invae-train", ["--set", "n_top_genes=5"], "is a data config key: --set data.n_top"),
    row("invae-train", ["--set", "model.z_i_dm=3"], "model.z_i_dm: unknown key; did you mean"),
    row("invae-train", ["--set", "learning_rate=-1"], "--set: learning_rate: got -1.0"),
    row("invae-train", ["--set", "learning_rate=.inf"], "allowed: a finite number"),
    row("invae-train", ["--set", "data.val_size=2"], "--set: data.val_size: got 2.0"),
    row("invae-train", ["--set", "data.nosuch=1"], "--set: data.nosuch: unknown key"),
    row("invae-train", ["--set", "data.bio_keys=[cell_type]"], "cell_type"),
    # --out
    row("invae-train", ["--out", "{in}/run"], "already holds run.json, model.pt"),
    row("invae-train", ["--out", "{in}/a_file"], "a_file: cannot write here"),
    row("invae-train", ["--out", "{in}/a_file/run"], "a_file/run: cannot write here"),
    row("invae-train", ["--out", "/proc/invae-run"], "/proc/invae-run: cannot write here"),
    # data
    row("invae-train", ["--data-config", "{in}/data_inf.yaml"], "non-finite values (e.g. inf)"),
    row("invae-train", ["--data-config", "{in}/data_nan.yaml"], "non-finite values (e.g. nan)"),
    # sweep files and options
    row("invae-sweep", ["--config", "/nonexistent.yaml"], "nonexistent.yaml: file not found"),
    row("invae-sweep", ["--config", "{in}/empty.yaml"], "empty.yaml: the file is empty"),
    row("invae-sweep", ["--config", "{in}/binary.yaml"], "not a text file"),
    row("invae-sweep", ["--config", "{in}"], "is a directory"),
    row("invae-sweep", ["--config", "{in}/inf_bound.yaml"], "allowed: finite numbers"),
    row("invae-sweep", ["--config", SMOKE, "--name", ".."], "--name: got '..'; allowed: a folder"),
    row("invae-sweep", ["--config", SMOKE, "--name", "."], "--name: got '.'"),
    row("invae-sweep", ["--config", SMOKE, "--name", "a/b"], "--name: got 'a/b'"),
    row("invae-sweep", ["--config", SMOKE, "--gpus", "-1"], "--gpus: got -1; allowed: an integer"),
    row("invae-sweep", ["--config", SMOKE, "--cpus", "0"], "--cpus: got 0; allowed"),
    row("invae-sweep", ["--config", SMOKE, "--storage", "{in}/a_file"], "storage: cannot write"),
    row("invae-sweep", ["--config", SMOKE, "--storage", "/proc/x"], "storage: cannot write"),
    row("invae-sweep", ["--config", SMOKE, "--resume"], "nothing to resume"),
    row("invae-sweep", ["--config", "{in}/sweep_inf.yaml"], "inf.h5ad: X holds non-finite"),
    # audits
    row("invae-audit", ["--config", SMOKE, "--repeats", "1"], "--repeats: got 1; allowed: >= 2"),
    row("invae-audit", ["--config", SMOKE, "--seed", "-1"], "--seed: got -1"),
    row("invae-audit", ["--config", "{in}/empty.yaml"], "the file is empty"),
    # reading results
    row("invae-verify", ["{in}/nowhere"], "summary.json: not found: not a finished sweep"),
    row("invae-verify", ["{in}/a_file"], "summary.json: not found"),
    row("invae-embed", ["{in}/nowhere", "--out", "{tmp}/new/e.h5ad"], "run.json: file not found"),
    row("invae-embed", ["{in}/run", "--out", "{in}/run/run.json"], "already holds run.json"),
    row("invae-reproduce", ["{in}/run", "--out", "{in}/run"], "already holds run.json"),
    row("invae-reproduce", ["{in}/nowhere"], "run.json: file not found"),
]


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) below ``folder``."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in folder.rglob("*")
    }


@pytest.mark.parametrize(("prog", "args", "fragment", "code"), ROWS)
def test_a_bad_input_is_one_line_naming_the_culprit_and_changes_nothing(
    prog, args, fragment, code, inputs, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INVAE_SWEEP_CACHE", str(inputs / "cache"))
    args = [a.format(**{"in": inputs, "tmp": tmp_path}) for a in args]
    fragment = fragment.format(**{"in": inputs, "tmp": tmp_path})
    if prog == "invae-train" and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    if prog == "invae-train":
        args = [*TINY, *args]
    if prog in ("invae-sweep", "invae-audit") and "--storage" not in args:
        args += ["--storage", str(tmp_path / "runs")]
    if prog in ("invae-sweep", "invae-audit") and "--gpus" not in args:
        args += ["--gpus", "0"]
    before, before_inputs = tree(tmp_path), tree(inputs)
    assert COMMANDS[prog](args) == code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert tree(tmp_path) == before  # nothing new, nothing changed: not even an empty folder
    assert tree(inputs) == before_inputs


def test_more_gpus_than_this_machine_has_are_refused_before_ray(tmp_path, capsys):
    import ray

    more = torch.cuda.device_count() + 1
    args = ["--config", SMOKE, "--storage", str(tmp_path), "--gpus", str(more)]
    assert sweep_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"--gpus {more}: this machine has" in err and "\n" not in err
    assert not ray.is_initialized() and not any(tmp_path.iterdir())


def test_the_out_folder_of_a_run_is_replaced_only_with_overwrite(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(inputs / "run", out)
    assert train_main([*TINY, "--out", str(out), "--overwrite"]) == 0
    assert (out / "run.json").read_bytes() != (inputs / "run" / "run.json").read_bytes()


def test_a_single_category_covariate_is_one_warning_line(inputs, tmp_path, capsys, monkeypatch):
    adata = ad.read_h5ad(KANG)
    adata.obs["condition"] = "control"
    adata.write_h5ad(tmp_path / "one.h5ad")
    config = tmp_path / "data.yaml"
    config.write_text(
        f"data_path: {tmp_path / 'one.h5ad'}\nbio_keys: [cell_type]\ntech_keys: [condition]\n"
        "n_top_genes: 100\n"
    )
    monkeypatch.setenv("INVAE_SWEEP_CACHE", str(tmp_path / "cache"))
    code = train_main([*TINY, "--data-config", str(config), "--out", str(tmp_path / "out")])
    assert code == 0
    warning = [x for x in capsys.readouterr().err.splitlines() if "warning" in x]
    assert warning == [
        f"invae-train: warning: {tmp_path / 'one.h5ad'}: obs['condition'] (tech_keys) has one "
        "category only ('control'): the model can learn nothing from it"
    ]


def test_ctrl_c_during_training_is_one_line_exit_130_and_writes_nothing(
    tmp_path, capsys, monkeypatch
):
    import trainables.standalone as standalone

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(standalone, "train", interrupted)
    assert train_main([*TINY, "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("invae-train: interrupted:") and "\n" not in err
    assert not (tmp_path / "out" / "run.json").exists()
