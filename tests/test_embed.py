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
    assert written.uns["invae"]["weights_sha256"] == kang_run[1].fingerprint["weights"]


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
