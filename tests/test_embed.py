"""Embeddings of every cell from a trained run, on its own data and on another dataset."""

from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from sweeper.cli import embed_main
from trainables.config import DataConfig, ModelConfig, TrainConfig
from trainables.datasets import DataError
from trainables.embed import LATENT_KEYS, embed_run
from trainables.files import ResultFileError
from trainables.standalone import run_standalone

KANG = str(Path(__file__).parent / "data" / "kang_small.h5ad")
TRAIN = TrainConfig(
    n_epochs=2, batch_size=64, device="cpu", model=ModelConfig(z_i_dim=4, z_s_dim=2, hidden=(16,))
)


@pytest.fixture(scope="module")
def kang_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kang-run")
    data = DataConfig(
        data_path=KANG,
        bio_keys=("cell_type",),
        tech_keys=("condition",),
        n_top_genes=300,
        cache_dir=str(folder / "cache"),
    )
    result = run_standalone(TRAIN, data, folder)
    return folder, result


def test_own_data_every_cell_gets_both_latents(kang_run, tmp_path):
    run_dir, _ = kang_run
    path, _ = embed_run(run_dir, tmp_path / "out.h5ad")
    written = ad.read_h5ad(path)
    source = ad.read_h5ad(KANG)
    assert written.n_obs == source.n_obs  # all cells, including validation ones
    assert written.obsm[LATENT_KEYS["inv"]].shape == (source.n_obs, 4)
    assert written.obsm[LATENT_KEYS["spur"]].shape == (source.n_obs, 2)
    assert {"cell_type", "condition"} <= set(written.obs.columns)
    assert list(written.obs_names) == list(source.obs_names)
    assert written.uns["invae"]["weights_sha256"] == kang_run[1].fingerprint.weights


def test_embedding_is_deterministic(kang_run, tmp_path):
    run_dir, _ = kang_run
    _, first = embed_run(run_dir, tmp_path / "a.h5ad")
    _, again = embed_run(run_dir, tmp_path / "b.h5ad")
    assert np.array_equal(first["obsm"][LATENT_KEYS["inv"]], again["obsm"][LATENT_KEYS["inv"]])


def test_another_compatible_dataset(kang_run, tmp_path):
    run_dir, _ = kang_run
    subset = ad.read_h5ad(KANG)[:50].copy()
    subset.write_h5ad(tmp_path / "subset.h5ad")
    assert (
        embed_main(
            [
                str(run_dir),
                "--data",
                str(tmp_path / "subset.h5ad"),
                "--out",
                str(tmp_path / "s.h5ad"),
            ]
        )
        == 0
    )
    assert ad.read_h5ad(tmp_path / "s.h5ad").obsm[LATENT_KEYS["inv"]].shape == (50, 4)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda a: a[:, 10:], "genes are missing"),
        (lambda a: a.obs.drop(columns="condition", inplace=True), "obs key 'condition' not found"),
        (lambda a: a.obs.__setitem__("cell_type", "neuron"), "not trained on: ['neuron']"),
    ],
)
def test_incompatible_datasets_are_refused(kang_run, tmp_path, capsys, change, fragment):
    run_dir, _ = kang_run
    data = ad.read_h5ad(KANG)
    changed = change(data)
    (changed if isinstance(changed, ad.AnnData) else data).write_h5ad(tmp_path / "bad.h5ad")
    code = embed_main(
        [str(run_dir), "--data", str(tmp_path / "bad.h5ad"), "--out", str(tmp_path / "o.h5ad")]
    )
    assert code == 2
    assert fragment in capsys.readouterr().err


def test_missing_run_is_named(tmp_path):
    with pytest.raises(ResultFileError, match=r"run\.json"):
        embed_run(tmp_path, tmp_path / "o.h5ad")


def test_data_errors_are_data_errors(kang_run, tmp_path):
    run_dir, _ = kang_run
    with pytest.raises(DataError):
        embed_run(run_dir, tmp_path / "o.h5ad", {"data_path": str(tmp_path / "absent.h5ad")})


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("{}", "key 'schema_version': missing"), ("[]", "expected a mapping, got []")],
)
def test_a_run_json_of_the_wrong_shape_is_one_line_exit_2(
    kang_run, tmp_path, capsys, content, fragment
):
    run_dir, _ = kang_run
    broken = tmp_path / "run"
    broken.mkdir()
    (broken / "model.pt").write_bytes((run_dir / "model.pt").read_bytes())
    (broken / "run.json").write_text(content)
    assert embed_main([str(broken), "--out", str(tmp_path / "o.h5ad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run.json" in err and fragment in err


def test_string_arrays_as_pandas_3_reads_them_are_written(tmp_path):
    import pandas as pd

    from trainables.data import write_embedding

    strings = pd.Index(["c1", "c2", "c3"], dtype="string")  # pandas 3's dtype for h5ad strings
    obs = pd.DataFrame({"label": pd.array(["a", "b", None], dtype="string")}, index=strings)
    adata = ad.AnnData(obs=obs)
    path = write_embedding(adata, {"X_z": np.zeros((3, 2))}, tmp_path / "e.h5ad", {"run": "r"})
    back = ad.read_h5ad(path)
    assert list(back.obs_names) == ["c1", "c2", "c3"]
    assert list(back.obs["label"][:2]) == ["a", "b"] and pd.isna(back.obs["label"].iloc[2])
