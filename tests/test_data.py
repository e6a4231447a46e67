import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import trainables.data as data_module
import trainables.datasets as datasets_module
from trainables.config import DataConfig, SimulationConfig
from trainables.data import PreparedData, load_anndata, prepare_data
from trainables.datasets import NAMED_DATASETS, DataError, cache_dir

KANG = Path(__file__).parent / "data" / "kang_small.h5ad"  # 400 cells x 1,500 genes, real counts
SIM = SimulationConfig(n_cells=400, n_genes=300, n_batches=3, n_cell_types=4, seed=1)


def sim_config(tmp_path, **changes) -> DataConfig:
    values = {"simulation": SIM, "n_top_genes": 100}
    return DataConfig(cache_dir=str(tmp_path), **{**values, **changes})


def kang_config(tmp_path, path=KANG, **changes) -> DataConfig:
    values = {"bio_keys": ("cell_type",), "tech_keys": ("condition",), "n_top_genes": 200}
    return DataConfig(data_path=str(path), cache_dir=str(tmp_path), **{**values, **changes})


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> PreparedData:
    return prepare_data(sim_config(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def kang(tmp_path_factory) -> PreparedData:
    return prepare_data(kang_config(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def kang_adata() -> ad.AnnData:
    return ad.read_h5ad(KANG)


def write(adata: ad.AnnData, tmp_path: Path, name: str = "input.h5ad") -> Path:
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


def splits(prepared: PreparedData):
    return (prepared.train, prepared.val)


def assert_same(a: PreparedData, b: PreparedData) -> None:
    for left, right in zip(splits(a), splits(b), strict=True):
        for field in dataclasses.fields(left):
            np.testing.assert_array_equal(getattr(left, field.name), getattr(right, field.name))
    assert a.genes == b.genes
    assert a.summary() == b.summary()


# --- simulated data end to end ---------------------------------------------------------------


def test_simulated_shapes_and_dtypes(sim):
    assert sim.n_genes == 100
    assert sim.train.n_cells + sim.val.n_cells + sim.source["n_cells_dropped"] == 400
    assert (sim.n_bio, sim.n_tech) == (4, 3)
    for split in splits(sim):
        assert split.counts.shape == (split.n_cells, 100)
        assert split.counts.dtype == np.float32 and split.counts.flags["C_CONTIGUOUS"]
        assert split.bio.shape == (split.n_cells, 4) and split.bio.dtype == np.float32
        assert split.tech.shape == (split.n_cells, 3) and split.tech.dtype == np.float32
        assert split.bio_codes.dtype == split.tech_codes.dtype == np.int64
        assert split.cell_index.dtype == np.int64


def test_simulated_categories_and_source(sim):
    assert sim.bio_categories == {"celltype": ("type_01", "type_02", "type_03", "type_04")}
    assert sim.tech_categories == {"tech": ("batch_1", "batch_2", "batch_3")}
    assert sim.source["data_path"] == "simulated"
    assert (sim.source["n_cells_input"], sim.source["n_genes_input"]) == (400, 300)


def test_one_hot_matches_codes(sim):
    for split in splits(sim):
        np.testing.assert_array_equal(split.bio.argmax(axis=1), split.bio_codes[:, 0])
        np.testing.assert_array_equal(split.tech.argmax(axis=1), split.tech_codes[:, 0])


def test_split_size_follows_val_size(sim):
    n = sim.train.n_cells + sim.val.n_cells
    assert sim.val.n_cells == int(np.ceil(0.2 * n))
    assert not set(sim.train.cell_index) & set(sim.val.cell_index)


def test_stratification_keeps_every_category_in_both_splits(sim):
    for split in splits(sim):
        assert set(split.bio_codes[:, 0]) == set(range(4))
        assert set(split.tech_codes[:, 0]) == set(range(3))


def test_stratification_keeps_category_shares(sim):
    train_share = np.bincount(sim.train.bio_codes[:, 0]) / sim.train.n_cells
    val_share = np.bincount(sim.val.bio_codes[:, 0]) / sim.val.n_cells
    np.testing.assert_allclose(train_share, val_share, atol=0.03)


def test_cell_index_points_at_the_input_counts(tmp_path, sim):
    adata = load_anndata(sim_config(tmp_path))
    columns = adata.var_names.get_indexer(list(sim.genes))
    for split in splits(sim):
        expected = adata.X[split.cell_index][:, columns].toarray()
        np.testing.assert_array_equal(split.counts, expected)


def test_load_anndata_wraps_the_simulation(tmp_path):
    adata = load_anndata(sim_config(tmp_path))
    assert adata.shape == (400, 300)
    assert list(adata.obs.columns) == ["celltype", "tech"]
    assert sparse.issparse(adata.X)


def test_summary_is_json_friendly(sim):
    summary = json.loads(json.dumps(sim.summary()))
    assert summary["n_genes"] == 100 and len(summary["genes"]) == 100
    assert summary["categories"]["tech"] == {"tech": ["batch_1", "batch_2", "batch_3"]}
    assert summary["source"]["cache_key"] == sim.source["cache_key"]


# --- real counts (Kang PBMC subset) ----------------------------------------------------------


def test_kang_end_to_end(kang):
    assert kang.n_genes == 200
    assert kang.bio_categories["cell_type"][0] == "CD4T"  # categorical order of the file
    assert kang.tech_categories == {"condition": ("stimulated", "control")}
    assert kang.train.n_cells + kang.val.n_cells == 400
    with KANG.open("rb") as handle:
        assert kang.source["input_sha256"] == hashlib.file_digest(handle, "sha256").hexdigest()


def test_one_hot_sums_to_number_of_keys(tmp_path):
    cfg = kang_config(tmp_path, bio_keys=("cell_type", "condition"), tech_keys=("condition",))
    prepared = prepare_data(cfg)
    assert prepared.n_bio == 7 + 2
    for split in splits(prepared):
        np.testing.assert_array_equal(split.bio.sum(axis=1), 2)
        np.testing.assert_array_equal(split.tech.sum(axis=1), 1)


def test_no_covariate_keys_give_empty_one_hot_blocks(tmp_path):
    prepared = prepare_data(kang_config(tmp_path, bio_keys=(), tech_keys=()))
    assert (prepared.n_bio, prepared.n_tech) == (0, 0)
    assert prepared.train.bio.shape == (prepared.train.n_cells, 0)
    assert prepared.val.tech_codes.shape == (prepared.val.n_cells, 0)


def test_all_genes_kept_without_scanpy_when_n_top_genes_equals_n_genes(tmp_path, monkeypatch):
    monkeypatch.setattr(sc.pp, "highly_variable_genes", None)  # calling it would fail
    prepared = prepare_data(kang_config(tmp_path, n_top_genes=1500))
    assert prepared.genes == tuple(ad.read_h5ad(KANG).var_names)


def test_genes_keep_input_order(kang, kang_adata):
    positions = kang_adata.var_names.get_indexer(list(kang.genes))
    assert (positions >= 0).all() and (np.diff(positions) > 0).all()


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        (pd.Categorical(["z", "a"] * 200, categories=["z", "a", "unused"]), ("z", "a")),
        (["z", "a"] * 200, ("a", "z")),
        ([2, 10] * 200, ("10", "2")),
    ],
    ids=["categorical-order", "sorted-strings", "numbers-as-strings"],
)
def test_category_order(tmp_path, kang_adata, column, expected):
    kang_adata.obs["group"] = column
    prepared = prepare_data(
        kang_config(tmp_path, write(kang_adata, tmp_path), tech_keys=("group",))
    )
    assert prepared.tech_categories["group"] == expected


LAYOUTS = {
    "dense": lambda x: x.toarray(),
    "csc": sparse.csc_matrix,
    "int64-dense": lambda x: x.toarray().astype(np.int64),
}


@pytest.mark.parametrize("layout", [*LAYOUTS, "layer"])
def test_count_layouts_give_the_same_result(tmp_path, kang, kang_adata, layout):
    changes = {}
    if layout == "layer":
        kang_adata.layers["counts"] = kang_adata.X
        kang_adata.X = sc.pp.log1p(kang_adata.X.copy())  # a normalised X must be ignored
        changes = {"counts_layer": "counts"}
    else:
        kang_adata.X = LAYOUTS[layout](kang_adata.X)
    prepared = prepare_data(kang_config(tmp_path, write(kang_adata, tmp_path), **changes))
    for got, want in zip(splits(prepared), splits(kang), strict=True):
        np.testing.assert_array_equal(got.counts, want.counts)


def test_cells_without_counts_in_selected_genes_are_dropped(tmp_path, kang_adata):
    counts = kang_adata.X.tolil()
    counts[[3, 50, 51], :] = 0
    kang_adata.X = counts.tocsr()
    prepared = prepare_data(kang_config(tmp_path, write(kang_adata, tmp_path)))
    assert prepared.source["n_cells_dropped"] == 3
    assert prepared.train.n_cells + prepared.val.n_cells == 397
    kept = np.concatenate([prepared.train.cell_index, prepared.val.cell_index])
    assert not {3, 50, 51} & set(kept)


@pytest.mark.parametrize("val_size", [0.2, 0.01, 0.6])
def test_rare_strata_do_not_break_the_split(tmp_path, kang_adata, val_size):
    donor = np.array(["d0"] * 400, dtype=object)
    donor[:6] = ["d1", "d2", "d3", "d4", "d5", "d5"]  # five strata of one or two cells
    kang_adata.obs["donor"] = donor
    cfg = kang_config(
        tmp_path, write(kang_adata, tmp_path), tech_keys=("condition", "donor"), val_size=val_size
    )
    prepared = prepare_data(cfg)
    assert prepared.val.n_cells == int(np.ceil(val_size * 400))
    assert set(prepared.train.bio_codes[:, 0]) == set(range(7))


# --- errors ----------------------------------------------------------------------------------


def _set(attr, value):
    def change(adata):
        setattr(adata, attr, value(adata) if callable(value) else value)

    return change


def _with_layer(adata):
    adata.layers["counts"] = sc.pp.log1p(adata.X.copy())


def _obs_value(key, value):
    def change(adata):
        column = adata.obs[key].astype(object).to_numpy(copy=True)  # pandas 3: views are read-only
        column[5] = value
        adata.obs[key] = column

    return change


def _scale_first(factor):
    def change(adata):
        adata.X = adata.X.copy()
        adata.X.data[0] *= factor

    return change


ERRORS = [
    ("non-integer-layer", _with_layer, {"counts_layer": "counts"},
     "layers['counts'] holds non-integer values (e.g. 0.693); inVAE needs raw counts"),
    ("non-integer-X", _scale_first(0.5), {}, "X holds non-integer values (e.g. 0.5)"),
    ("negative", _scale_first(-1), {}, "X holds negative values (e.g. -1)"),
    ("nan", _scale_first(np.nan), {}, "X holds non-finite values (e.g. nan)"),
    ("inf", _scale_first(np.inf), {}, "X holds non-finite values (e.g. inf)"),
    ("missing-layer", None, {"counts_layer": "count"}, "no layers['count']; available layers"),
    ("missing-obs-key", None, {"bio_keys": ("celltype",)},
     "obs key 'celltype' not found; available obs columns: ['cell_type', 'condition']; "
     "did you mean 'cell_type'?"),
    ("nan-covariate", _obs_value("condition", None), {},
     "obs['condition'] has 1 missing values (first in cell"),
    ("too-few-genes", None, {"n_top_genes": 2000}, "1500 genes, fewer than n_top_genes=2000"),
    ("no-cells", lambda a: a._inplace_subset_obs(np.zeros(a.n_obs, bool)), {},
     "empty data (0 cells x 1500 genes)"),
    ("no-genes", lambda a: a._inplace_subset_var(np.zeros(a.n_vars, bool)), {},
     "empty data (400 cells x 0 genes)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "overrides", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_bad_input_raises_a_clear_error(tmp_path, kang_adata, change, overrides, message):
    if change is not None:
        change(kang_adata)
    path = write(kang_adata, tmp_path, "bad.h5ad")
    with pytest.raises(DataError) as err:
        prepare_data(kang_config(tmp_path, path, **overrides))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=re.escape("nowhere.h5ad: file not found")):
        prepare_data(kang_config(tmp_path, tmp_path / "nowhere.h5ad"))


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "garbage.h5ad"
    path.write_bytes(b"not an h5ad file")
    with pytest.raises(DataError, match=re.escape("garbage.h5ad: not a readable .h5ad file")):
        prepare_data(kang_config(tmp_path, path))


def test_absent_named_dataset_without_download_says_what_to_do(tmp_path):
    cfg = DataConfig(data_path="scib_pancreas", cache_dir=str(tmp_path), download=False)
    with pytest.raises(DataError) as err:
        prepare_data(cfg)
    message = str(err.value)
    expected = tmp_path / "datasets" / NAMED_DATASETS["scib_pancreas"].filename
    assert str(expected) in message and "download: true" in message
    assert not expected.exists()


@pytest.mark.parametrize("reachable", [True, False])
def test_a_named_dataset_download_lands_whole_or_not_at_all(tmp_path, monkeypatch, reachable):
    named = NAMED_DATASETS["scib_pancreas"]
    source = KANG if reachable else tmp_path / "gone.h5ad"
    monkeypatch.setitem(
        NAMED_DATASETS, "scib_pancreas", dataclasses.replace(named, url=source.as_uri())
    )
    cfg = DataConfig(data_path="scib_pancreas", cache_dir=str(tmp_path / "cache"), download=True)
    target = tmp_path / "cache" / "datasets" / named.filename
    if reachable:
        assert load_anndata(cfg).n_obs == ad.read_h5ad(KANG).n_obs
        assert target.read_bytes() == KANG.read_bytes()
    else:
        with pytest.raises(DataError, match="could not download"):
            load_anndata(cfg)
        assert not any(target.parent.iterdir())  # no partial file left behind


def test_named_dataset_is_read_from_the_cache_folder(tmp_path, kang):
    target = tmp_path / "datasets" / NAMED_DATASETS["scib_pancreas"].filename
    target.parent.mkdir()
    shutil.copyfile(KANG, target)
    prepared = prepare_data(kang_config(tmp_path, path="scib_pancreas"))
    assert prepared.source["data_path"] == "scib_pancreas"
    assert prepared.source["input_sha256"] == kang.source["input_sha256"]
    assert prepared.genes == kang.genes


def test_unknown_name_suggests_a_close_one(tmp_path):
    with pytest.raises(DataError, match="did you mean 'scib_pancreas'"):
        prepare_data(DataConfig(data_path="scib_pancrea", cache_dir=str(tmp_path)))


# --- cache and determinism -------------------------------------------------------------------


def test_cache_hit_skips_scanpy(tmp_path, monkeypatch):
    cfg = kang_config(tmp_path)
    first = prepare_data(cfg)

    def fail(*args, **kwargs):
        raise AssertionError("scanpy was called on a cache hit")

    monkeypatch.setattr(sc.pp, "highly_variable_genes", fail)
    monkeypatch.setattr(data_module, "_read_h5ad", fail)
    assert_same(prepare_data(cfg), first)


@pytest.mark.parametrize(
    "corrupt",
    [lambda raw: raw[:100], lambda raw: b"garbage", lambda raw: b""],
    ids=["truncated", "garbage", "empty"],
)
def test_corrupt_cache_is_rebuilt(tmp_path, corrupt):
    cfg = sim_config(tmp_path)
    first = prepare_data(cfg)
    (cache_file,) = (tmp_path / "prepared").glob("*.npz")
    cache_file.write_bytes(corrupt(cache_file.read_bytes()))
    with pytest.warns(UserWarning, match="unreadable data cache"):
        rebuilt = prepare_data(cfg)
    assert_same(rebuilt, first)
    assert_same(prepare_data(cfg), first)  # the rebuilt file is valid again


def test_without_cache_two_runs_are_identical(tmp_path):
    a = prepare_data(kang_config(tmp_path / "a"))
    b = prepare_data(kang_config(tmp_path / "b"))
    assert_same(a, b)


@pytest.mark.parametrize(
    ("changes", "same"),
    [
        ({"download": True}, True),
        ({"n_top_genes": 150}, False),
        ({"random_state": 1}, False),
        ({"simulation": dataclasses.replace(SIM, seed=2)}, False),
    ],
)
def test_cache_key_covers_what_changes_the_result(tmp_path, sim, changes, same):
    prepared = prepare_data(sim_config(tmp_path, **changes))
    assert (prepared.source["cache_key"] == sim.source["cache_key"]) is same


@pytest.mark.parametrize(
    ("configured", "env", "expected"),
    [("/c/fig", "/c/env", "/c/fig"), (None, "/c/env", "/c/env"), (None, None, "HOME")],
)
def test_cache_dir_resolution(monkeypatch, tmp_path, configured, env, expected):
    monkeypatch.setenv("HOME", str(tmp_path))
    if env is None:
        monkeypatch.delenv(datasets_module.CACHE_ENV, raising=False)
    else:
        monkeypatch.setenv(datasets_module.CACHE_ENV, env)
    want = tmp_path / ".cache" / "invae-sweep" if expected == "HOME" else Path(expected)
    assert cache_dir(DataConfig(cache_dir=configured)) == want
