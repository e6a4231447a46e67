import dataclasses

import numpy as np
import pytest

from trainables.config import SimulationConfig
from trainables.simulate import (
    CHUNK_CELLS,
    cell_type_proportions,
    draw_counts,
    simulate,
)

SMALL = SimulationConfig(n_cells=600, n_genes=300, n_batches=3, n_cell_types=4, seed=7)


@pytest.fixture(scope="module")
def small():
    return simulate(SMALL)


def _bytes(sim):
    m = sim.counts
    return b"".join(a.tobytes() for a in (m.data, m.indices, m.indptr, sim.celltype, sim.tech))


def test_same_seed_gives_identical_bytes(small):
    assert _bytes(simulate(SMALL)) == _bytes(small)


def test_other_seed_differs(small):
    other = simulate(dataclasses.replace(SMALL, seed=8))
    assert _bytes(other) != _bytes(small)


def test_shapes_dtypes_and_labels(small):
    assert small.counts.shape == (600, 300)
    assert small.counts.dtype == np.float32
    assert small.counts.format == "csr"
    assert set(small.celltype) == {"type_01", "type_02", "type_03", "type_04"}
    assert set(small.tech) == {"batch_1", "batch_2", "batch_3"}
    assert small.gene_names[0] == "gene_00001"
    assert len(set(small.gene_names)) == 300


def test_counts_are_non_negative_integers(small):
    data = small.counts.data
    assert (data >= 0).all()
    np.testing.assert_array_equal(data, np.round(data))
    assert small.counts.sum() > 0


def test_library_sizes_follow_lib_loc(small):
    totals = np.asarray(small.counts.sum(axis=1)).ravel()
    assert abs(np.log(np.median(totals)) - SMALL.lib_loc) < 0.3


def test_cell_types_have_unequal_proportions(small):
    _, sizes = np.unique(small.celltype, return_counts=True)
    np.testing.assert_allclose(sizes / 600, cell_type_proportions(4), atol=1 / 600)
    assert sizes[0] > 2 * sizes[-1]


@pytest.mark.parametrize(("n_cells", "n_types"), [(14, 14), (20, 14), (100, 3), (2, 1)])
def test_every_cell_type_gets_cells(n_cells, n_types):
    cfg = SimulationConfig(n_cells=n_cells, n_genes=20, n_cell_types=n_types, n_batches=2)
    assert len(set(simulate(cfg).celltype)) == n_types


def _group_log_means(sim, labels):
    dense = sim.counts.toarray()
    norm = np.log1p(dense / dense.sum(axis=1, keepdims=True) * 1e4)
    return np.stack([norm[labels == g].mean(axis=0) for g in np.unique(labels)])


@pytest.mark.parametrize("labels", ["celltype", "tech"])
def test_groups_differ_in_expression(small, labels):
    # Between-group differences of mean log expression far exceed those of random halves.
    means = _group_log_means(small, getattr(small, labels))
    shuffled = np.random.default_rng(0).permutation(getattr(small, labels))
    null = _group_log_means(small, shuffled)
    assert np.abs(means[0] - means[1]).mean() > 1.5 * np.abs(null[0] - null[1]).mean()


def test_cell_types_differ_more_than_batches_with_default_scales(small):
    types = _group_log_means(small, small.celltype)
    batches = _group_log_means(small, small.tech)
    assert np.abs(types[0] - types[1]).max() > np.abs(batches[0] - batches[1]).max()


def test_chunking_spans_several_chunks():
    cfg = SimulationConfig(n_cells=CHUNK_CELLS + 5, n_genes=50, seed=3)
    sim = simulate(cfg)
    assert sim.counts.shape == (CHUNK_CELLS + 5, 50)
    assert _bytes(simulate(cfg)) == _bytes(sim)


@pytest.mark.parametrize(
    ("mean", "bcv2"), [(0.05, 20.0), (0.5, 2.0), (3.0, 0.5), (20.0, 0.1), (100.0, 0.05)]
)
def test_draw_counts_matches_gamma_poisson_moments(mean, bcv2):
    n = 200_000
    rng = np.random.default_rng(1)
    bcv_gene = np.array([np.sqrt(bcv2) / (0.2 + 1 / np.sqrt(mean))])
    counts = draw_counts(rng, np.full((n, 1), mean), 0.2, bcv_gene).toarray().ravel()
    reference = rng.poisson(rng.gamma(1 / bcv2, mean * bcv2, size=n))
    se_mean = np.sqrt((mean + mean**2 * bcv2) / n)
    assert abs(counts.mean() - mean) < 5 * se_mean
    assert counts.var() == pytest.approx(mean + mean**2 * bcv2, rel=0.1)
    assert (counts == 0).mean() == pytest.approx((reference == 0).mean(), abs=0.01)
