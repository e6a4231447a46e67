import numpy as np
import pytest
from sklearn.metrics import silhouette_samples, silhouette_score
from sklearn.neighbors import NearestNeighbors

from trainables.integration import BATCH_KEYS, BIO_KEYS, INTEGRATION_KEYS, integration_metrics

N_CELLS = 600


def _blobs(n_types, n_batches, batch_shift, seed=0, n_cells=N_CELLS, p=None):
    """Cell types as unit Gaussians 20 apart; each batch shifted by batch_shift on its own axis."""
    rng = np.random.default_rng(seed)
    types = rng.integers(n_types, size=n_cells)
    batches = rng.choice(n_batches, size=n_cells, p=p)
    x = rng.normal(size=(n_cells, 10))
    x[np.arange(n_cells), types] += 20.0
    x[np.arange(n_cells), n_types + batches] += batch_shift
    return x, types, batches


def _noise(seed=1):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(N_CELLS, 10)),
        rng.integers(3, size=N_CELLS),
        rng.integers(2, size=N_CELLS),
    )


def _overlapping():
    """Overlapping types and batches, with the corner cases of a silhouette.

    Type 7 has three cells, one per batch; type 8 has a single cell; and one type-0 cell is
    alone in batch 5.
    """
    x, types, batches = _blobs(n_types=4, n_batches=3, batch_shift=1.0, seed=3)
    x[:, :4] /= 15.0
    types[:4], batches[:3] = [7, 7, 7, 8], [0, 1, 2]
    batches[np.flatnonzero(types == 0)[0]] = 5
    return x, types, batches


CASES = {
    # batches drawn independently of everything within well-separated cell types
    "mixed": _blobs(n_types=3, n_batches=3, batch_shift=0.0),
    # within each cell type every batch is its own cluster, far from the others
    "unmixed": _blobs(n_types=3, n_batches=2, batch_shift=30.0),
    # pure noise with random labels: 3 balanced cell types
    "noise": _noise(),
    "overlapping": _overlapping(),
}


@pytest.fixture(scope="module")
def scores():
    return {name: integration_metrics(*data) for name, data in CASES.items()}


@pytest.mark.parametrize(
    ("case", "key", "low", "high"),
    [
        ("mixed", "batch_asw", 0.95, 1.0),
        # finite k caps perfect mixing a little below 1 (about 0.93 for 3 batches at k = 15)
        ("mixed", "batch_entropy", 0.9, 1.0),
        ("mixed", "bio_asw", 0.8, 1.0),
        ("mixed", "bio_knn_accuracy", 1.0, 1.0),
        ("unmixed", "batch_entropy", 0.0, 0.0),
        ("unmixed", "batch_asw", 0.0, 0.15),
        ("unmixed", "bio_knn_accuracy", 1.0, 1.0),
        ("noise", "bio_knn_accuracy", 1 / 3 - 0.05, 1 / 3 + 0.05),
        ("noise", "bio_asw", 0.48, 0.52),
    ],
)
def test_constructed_case_scores_as_expected(scores, case, key, low, high):
    assert low <= scores[case][key] <= high


@pytest.mark.parametrize("case", CASES)
def test_scores_lie_in_unit_interval(scores, case):
    assert list(scores[case]) == list(INTEGRATION_KEYS)
    assert all(0.0 <= value <= 1.0 for value in scores[case].values())


@pytest.mark.parametrize("case", CASES)
def test_combined_scores_follow_scib_weights(scores, case):
    result = scores[case]
    bio = (result["bio_asw"] + result["bio_knn_accuracy"]) / 2
    batch = (result["batch_asw"] + result["batch_entropy"]) / 2
    assert result["bio_score"] == pytest.approx(bio)
    assert result["batch_score"] == pytest.approx(batch)
    assert result["integration_score"] == pytest.approx(0.6 * bio + 0.4 * batch)


def test_bio_asw_matches_sklearn(scores):
    x, types, _ = CASES["overlapping"]
    expected = (silhouette_score(x, types) + 1) / 2
    assert scores["overlapping"]["bio_asw"] == pytest.approx(expected, abs=1e-12)


def test_batch_asw_matches_sklearn_per_cell_type(scores):
    x, types, batches = CASES["overlapping"]
    # types 7 (three cells in three batches) and 8 (one cell) have no batch silhouette
    per_type = [
        np.mean(1 - np.abs(silhouette_samples(x[types == t], batches[types == t])))
        for t in (0, 1, 2, 3)
    ]
    assert scores["overlapping"]["batch_asw"] == pytest.approx(np.mean(per_type), abs=1e-12)


def test_knn_metrics_match_sklearn_neighbours(scores):
    x, types, batches = CASES["overlapping"]
    neighbors = NearestNeighbors(n_neighbors=15).fit(x).kneighbors(return_distance=False)
    credits = []
    for row, own in zip(neighbors, types, strict=True):
        top = np.bincount(types[row], minlength=9) == np.bincount(types[row]).max()
        credits.append(top[own] / top.sum())  # a tie among t types gives 1 / t credit
    codes = np.unique(batches, return_inverse=True)[1]  # four batches: 0, 1, 2 and 5
    proportions = np.bincount(codes) / len(codes)
    entropies = []
    for row in neighbors:
        q = np.bincount(codes[row], minlength=4) / proportions
        q = q[q > 0] / q.sum()
        entropies.append(-(q * np.log(q)).sum() / np.log(4))
    assert scores["overlapping"]["bio_knn_accuracy"] == pytest.approx(np.mean(credits))
    assert scores["overlapping"]["batch_entropy"] == pytest.approx(np.mean(entropies))


def test_batch_asw_ignores_cell_types_in_one_batch():
    x, types, batches = CASES["mixed"]
    lone = np.random.default_rng(5).normal(size=(50, x.shape[1])) - 20.0  # type 9, batch 0 only
    extended = integration_metrics(
        np.vstack([x, lone]), np.r_[types, [9] * 50], np.r_[batches, [0] * 50]
    )
    assert extended["batch_asw"] == pytest.approx(
        integration_metrics(x, types, batches)["batch_asw"]
    )


def test_knn_accuracy_splits_ties_evenly():
    # triples far apart on a line, types (0, 0, 1), k = 2: the two type-0 cells see one
    # neighbour of each type (a tie, half credit), the type-1 cell sees two of type 0
    x = (np.arange(30)[:, None] // 3) * 100.0 + (np.arange(30)[:, None] % 3) * 0.1
    types = np.tile([0, 0, 1], 10)
    batches = np.arange(30) % 2
    result = integration_metrics(x, types, batches, n_neighbors=2)
    assert result["bio_knn_accuracy"] == pytest.approx(1 / 3)


def test_batch_entropy_corrects_for_unequal_batch_sizes():
    # perfect mixing of an 80/20 batch split: raw entropy would give about 0.72
    x, types, batches = _blobs(n_types=3, n_batches=2, batch_shift=0.0, n_cells=1000, p=[0.8, 0.2])
    assert integration_metrics(x, types, batches, n_neighbors=50)["batch_entropy"] > 0.95


def test_string_labels_score_as_integer_codes():
    x, types, batches = CASES["overlapping"]
    named_types = np.array([f"type {t}" for t in types])  # sorts as the integer codes do
    named = integration_metrics(x, named_types, batches.astype(str))
    assert named == integration_metrics(x, types, batches)


def test_single_batch_gives_nan_batch_metrics():
    x, types, _ = CASES["mixed"]
    result = integration_metrics(x, types, np.zeros(len(x), dtype=int))
    nan_keys = {*BATCH_KEYS, "batch_score", "integration_score"}
    assert all(np.isnan(result[key]) for key in nan_keys)
    assert all(0.0 <= result[key] <= 1.0 for key in (*BIO_KEYS, "bio_score"))


def test_subsampling_scores_a_seeded_uniform_subset():
    x, types, batches = CASES["overlapping"]
    subset = np.sort(np.random.default_rng(7).choice(len(x), size=200, replace=False))
    expected = integration_metrics(x[subset], types[subset], batches[subset])
    assert integration_metrics(x, types, batches, max_cells=200, seed=7) == expected


def test_subsampling_is_deterministic_for_a_seed():
    data = CASES["overlapping"]
    first = integration_metrics(*data, max_cells=200, seed=3)
    assert integration_metrics(*data, max_cells=200, seed=3) == first
    assert integration_metrics(*data, max_cells=200, seed=4) != first


def test_seed_is_unused_without_subsampling():
    data = CASES["overlapping"]
    assert integration_metrics(*data, seed=1) == integration_metrics(*data, seed=2)


def test_neighbours_are_capped_by_the_number_of_cells():
    x, types, batches = np.eye(6), np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 0, 1, 0, 1])
    capped = integration_metrics(x, types, batches, n_neighbors=5)
    assert integration_metrics(x, types, batches, n_neighbors=15) == capped


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embedding": np.ones(6)}, "2-D"),
        ({"embedding": np.where(np.eye(6) == 1, np.nan, 0.0)}, "NaN or infinite"),
        ({"embedding": np.where(np.eye(6) == 1, np.inf, 0.0)}, "NaN or infinite"),
        ({"cell_types": np.zeros(5, dtype=int)}, "cell_types must have shape"),
        ({"batches": np.zeros((6, 1), dtype=int)}, "batches must have shape"),
        ({"cell_types": np.zeros(6, dtype=int)}, "at least 2 cell types"),
        ({"cell_types": np.arange(6)}, "more cells than cell types"),
        ({"n_neighbors": 1}, "n_neighbors must be at least 2"),
        ({"max_cells": 2}, "max_cells must be at least 3"),
    ],
)
def test_invalid_input_raises(change, message):
    arguments = {
        "embedding": np.eye(6),
        "cell_types": np.array([0, 0, 0, 1, 1, 1]),
        "batches": np.array([0, 1, 0, 1, 0, 1]),
    }
    with pytest.raises(ValueError, match=message):
        integration_metrics(**{**arguments, **change})
