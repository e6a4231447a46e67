"""Integration quality of a cell embedding: batch mixing and cell-type conservation.

:func:`integration_metrics` scores an embedding (for inVAE, ``z_i`` of the validation cells) the
way scIB does (Luecken et al. 2022, Nat. Methods 19:41): two biological-conservation metrics,
two batch-mixing metrics, their means and the scIB-weighted overall score. Every score lies in
``[0, 1]`` and higher is better, so a sweep can rank trials by any of them with mode ``"max"``.

The silhouettes cost time quadratic in the number of cells, which ``max_cells`` bounds.
"""

from __future__ import annotations

import numpy as np

BIO_KEYS: tuple[str, ...] = ("bio_asw", "bio_knn_accuracy")
BATCH_KEYS: tuple[str, ...] = ("batch_asw", "batch_entropy")
INTEGRATION_KEYS: tuple[str, ...] = (
    *BIO_KEYS,
    *BATCH_KEYS,
    "bio_score",
    "batch_score",
    "integration_score",
)
INTEGRATION_METRIC = "integration_score"  # the combined score, for use as a sweep metric
INTEGRATION_MODE = "max"  # every key in INTEGRATION_KEYS: higher is better

# scIB's overall score weights biological conservation 0.6 and batch correction 0.4.
BIO_WEIGHT = 0.6
BATCH_WEIGHT = 0.4


def integration_metrics(
    embedding: np.ndarray,
    cell_types: np.ndarray,
    batches: np.ndarray,
    *,
    n_neighbors: int = 15,
    max_cells: int = 5000,
    seed: int = 0,
) -> dict[str, float]:
    """Score how well an embedding mixes batches while keeping cell types apart.

    All distances are Euclidean. Neighbourhoods are the ``k`` nearest other cells (a cell is
    never its own neighbour), ``k = min(n_neighbors, n_cells - 1)``. The metrics:

    - ``bio_asw``: cell-type silhouette, ``(s + 1) / 2`` with ``s`` sklearn's mean silhouette
      over cell-type labels (scIB "cell type ASW").
    - ``bio_knn_accuracy``: fraction of cells whose majority cell type among their ``k``
      neighbours is their own. A tie among ``t`` top types gives ``1 / t`` credit when the own
      type is one of them (the expected accuracy of a random tie-break), so no label is
      favoured and a random embedding scores chance (``1 / n_types`` for balanced types).
    - ``batch_asw``: scIB batch ASW. Within each cell type, ``mean_i(1 - |s_i|)`` with ``s_i``
      sklearn's silhouette of cell ``i`` over batch labels, computed on that cell type's cells
      only; then the unweighted mean over cell types. Cell types found in fewer than 2 batches,
      or with as many batches as cells (silhouette undefined), are skipped; NaN if none is left.
    - ``batch_entropy``: kNN batch-mixing entropy. Per cell, the neighbours' batch counts
      ``n_b`` are divided by the global batch proportions ``p_b`` and renormalised,
      ``q_b = (n_b / p_b) / sum_b'(n_b' / p_b')``, and the Shannon entropy of ``q`` is divided
      by its maximum, ``log(min(k, n_batches))``; then the mean over cells. Dividing by ``p_b``
      makes a neighbourhood with the dataset's own batch composition score 1 even when batches
      differ in size (raw entropy, like scIB's iLISI, caps below 1 for unbalanced batches).
      For balanced batches the two agree. With finitely many neighbours even perfect mixing
      scores a little below 1 (about 0.95 for two batches at ``k = 15``).
    - ``bio_score = mean(bio_asw, bio_knn_accuracy)``,
      ``batch_score = mean(batch_asw, batch_entropy)`` and
      ``integration_score = 0.6 * bio_score + 0.4 * batch_score`` (scIB's weights).

    With a single batch there is nothing to mix: ``batch_asw``, ``batch_entropy``,
    ``batch_score`` and ``integration_score`` are NaN, while the bio metrics are still scored.
    NaN likewise propagates from ``batch_asw`` when no cell type spans two batches.

    Above ``max_cells`` cells, a uniform random subset of ``max_cells`` cells (without
    replacement, from ``numpy.random.default_rng(seed)``) is scored, which keeps the expected
    composition and bounds the quadratic silhouette cost. Below it every cell is used and the
    seed has no effect. The result is a deterministic function of the inputs and the seed.

    Args:
        embedding: Cell coordinates, shape ``(n_cells, n_dims)``, finite.
        cell_types: Cell-type label per cell, shape ``(n_cells,)``; integer codes or strings.
        batches: Batch label per cell, shape ``(n_cells,)``; integer codes or strings.
        n_neighbors: Neighbours per cell for the kNN metrics, at least 2.
        max_cells: Most cells to score, at least 3; larger inputs are subsampled.
        seed: Seed for the subsampling.

    Returns:
        The scores as floats, keyed and ordered as :data:`INTEGRATION_KEYS`.

    Raises:
        ValueError: If the embedding is not 2-D or has NaN or infinite values, if a label array
            does not match it in length, if ``n_neighbors < 2`` or ``max_cells < 3``, or if the
            scored cells hold fewer than 2 cell types or no more cells than cell types.
    """
    x = _validated_embedding(embedding)
    types = _validated_labels("cell_types", cell_types, len(x))
    batch = _validated_labels("batches", batches, len(x))
    _check_sizes(n_neighbors=n_neighbors, max_cells=max_cells)
    keep = _subsample(len(x), max_cells, seed)
    x, types, batch = x[keep], _codes(types[keep]), _codes(batch[keep])
    n_types = types.max() + 1
    if not can_score(types):
        raise ValueError(
            f"need at least 2 cell types and more cells than cell types; the {len(x)} scored "
            f"cells hold {n_types} cell type(s)"
        )
    # Imported here: scikit-learn adds ~1 s to the start of every process that trains.
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors, len(x) - 1)
    neighbors = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(return_distance=False)
    n_batches = batch.max() + 1
    one_batch = n_batches < 2  # nothing to mix: the batch metrics are undefined
    scores = {
        "bio_asw": (silhouette_score(x, types) + 1) / 2,
        "bio_knn_accuracy": _knn_accuracy(neighbors, types, n_types),
        "batch_asw": np.nan if one_batch else _batch_asw(x, types, batch),
        "batch_entropy": np.nan if one_batch else _batch_entropy(neighbors, batch, n_batches),
    }
    scores["bio_score"] = np.mean([scores[key] for key in BIO_KEYS])
    scores["batch_score"] = np.mean([scores[key] for key in BATCH_KEYS])
    scores["integration_score"] = (
        BIO_WEIGHT * scores["bio_score"] + BATCH_WEIGHT * scores["batch_score"]
    )
    return {key: float(scores[key]) for key in INTEGRATION_KEYS}


def can_score(cell_types: np.ndarray) -> bool:
    """Whether the cells hold what scoring needs: 2 or more types, more cells than types."""
    n_types = len(np.unique(cell_types))
    return n_types >= 2 and len(cell_types) > n_types


def _validated_embedding(embedding: np.ndarray) -> np.ndarray:
    """Return the embedding as a float64 array after checking its shape and values."""
    x = np.asarray(embedding, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embedding must be 2-D (n_cells, n_dims), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embedding contains NaN or infinite values")
    return x


def _validated_labels(name: str, labels: np.ndarray, n_cells: int) -> np.ndarray:
    """Return the labels as an array after checking they give one label per cell."""
    array = np.asarray(labels)
    if array.shape != (n_cells,):
        raise ValueError(
            f"{name} must have shape ({n_cells},) to match the embedding, got {array.shape}"
        )
    return array


def _check_sizes(*, n_neighbors: int, max_cells: int) -> None:
    """Raise if the neighbourhood size or the cell cap is too small to score anything."""
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be at least 2, got {n_neighbors}")
    if max_cells < 3:
        raise ValueError(f"max_cells must be at least 3, got {max_cells}")


def _subsample(n_cells: int, max_cells: int, seed: int) -> np.ndarray:
    """Return sorted indices of a uniform random subset of ``max_cells`` cells, or all cells."""
    if n_cells <= max_cells:
        return np.arange(n_cells)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_cells, size=max_cells, replace=False))


def _codes(labels: np.ndarray) -> np.ndarray:
    """Map labels to integer codes ``0..n_labels - 1`` in sorted label order."""
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _neighbor_counts(neighbors: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Count each label among each cell's neighbours: ``(n_cells, k)`` -> ``(n_cells, n_codes)``."""
    n_cells, k = neighbors.shape
    flat = np.repeat(np.arange(n_cells), k) * n_codes + codes[neighbors].reshape(-1)
    return np.bincount(flat, minlength=n_cells * n_codes).reshape(n_cells, n_codes)


def _knn_accuracy(neighbors: np.ndarray, types: np.ndarray, n_types: int) -> float:
    """Return the majority-vote accuracy of the neighbours, ties split evenly."""
    counts = _neighbor_counts(neighbors, types, n_types)
    is_top = counts == counts.max(axis=1, keepdims=True)
    own_is_top = is_top[np.arange(len(types)), types]
    return float(np.mean(own_is_top / is_top.sum(axis=1)))


def _batch_asw(x: np.ndarray, types: np.ndarray, batches: np.ndarray) -> float:
    """Return scIB's batch ASW: per cell type ``mean(1 - |silhouette over batches|)``, averaged.

    Args:
        x: Cell coordinates, shape ``(n_cells, n_dims)``.
        types: Cell-type code per cell, shape ``(n_cells,)``.
        batches: Batch code per cell, shape ``(n_cells,)``.

    Returns:
        The batch ASW, or NaN if no cell type has a defined batch silhouette.
    """
    from sklearn.metrics import silhouette_samples

    per_type = []
    for cell_type in np.unique(types):
        in_type = types == cell_type
        n_batches = len(np.unique(batches[in_type]))
        if n_batches < 2 or n_batches >= in_type.sum():  # silhouette undefined
            continue
        silhouettes = silhouette_samples(x[in_type], batches[in_type])
        per_type.append(np.mean(1 - np.abs(silhouettes)))
    return float(np.mean(per_type)) if per_type else np.nan


def _batch_entropy(neighbors: np.ndarray, batches: np.ndarray, n_batches: int) -> float:
    """Return the mean normalised entropy of proportion-corrected neighbour batch counts."""
    proportions = np.bincount(batches, minlength=n_batches) / len(batches)
    weighted = _neighbor_counts(neighbors, batches, n_batches) / proportions
    q = weighted / weighted.sum(axis=1, keepdims=True)
    log_q = np.log(q, out=np.zeros_like(q), where=q > 0)
    entropy = -(q * log_q).sum(axis=1) / np.log(min(neighbors.shape[1], n_batches))
    return float(np.clip(entropy, 0.0, 1.0).mean())
