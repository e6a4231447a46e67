"""The built-in simulated dataset: Splatter-style negative-binomial counts.

Follows the Splatter model (Zappia et al., 2017, https://doi.org/10.1186/s13059-017-1305-0):

1. gene base means ``lambda_g ~ Gamma(mean_shape, rate=mean_rate)``;
2. per cell type, a fraction ``de_prob`` of genes is differentially expressed with factor
   ``exp(Normal(de_loc, de_scale))``, half of them inverted (down-regulated);
3. per batch and gene, a factor ``exp(Normal(batch_loc, batch_scale))``;
4. cell means: the product of 1-3, normalised to proportions per cell, times a log-normal
   library size ``exp(Normal(lib_loc, lib_scale))``;
5. biological coefficient of variation
   ``bcv = (bcv_common + 1 / sqrt(mean)) * sqrt(bcv_df / chi2(bcv_df))`` (chi2 drawn per gene,
   as in Splatter), then counts ``~ Poisson(Gamma(shape=1 / bcv^2, scale=mean * bcv^2))``.

Cell types have unequal, Zipf-like proportions (type ``k`` gets a share proportional to
``1 / k``, every type at least one cell); batches have equal sizes. Both are assigned to cells
by a seeded random permutation, independently of each other. Everything is drawn from
``numpy.random.Generator(PCG64)`` streams derived from ``cfg.seed``: the global parameters from
one, the counts of each block of :data:`CHUNK_CELLS` cells from its own, so the same config
always gives the same bytes and memory stays bounded at the pancreas shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from trainables.config import SimulationConfig

SIMULATOR_VERSION = 1
"""Bump when the generative model or the random streams change (invalidates cached data)."""

CHUNK_CELLS = 256
"""Cells generated at once: a (256, 19,093) float64 block is ~39 MB."""

INVERSE_CDF_MAX_MEAN = 30.0
"""Counts with a larger mean are drawn as Gamma then Poisson (see :func:`draw_counts`)."""


@dataclass(frozen=True, eq=False)
class SimulatedCounts:
    """Simulated raw counts and the labels of each cell.

    Attributes:
        counts: ``(n_cells, n_genes)`` CSR matrix of integer counts stored as float32.
        celltype: ``(n_cells,)`` cell-type labels, ``"type_01"``, ``"type_02"``, ...
        tech: ``(n_cells,)`` batch labels, ``"batch_1"``, ``"batch_2"``, ...
        gene_names: ``(n_genes,)`` gene names, ``"gene_00001"``, ...
    """

    counts: sparse.csr_matrix
    celltype: np.ndarray
    tech: np.ndarray
    gene_names: np.ndarray


@dataclass(frozen=True)
class _Params:
    """Global parameters shared by all chunks."""

    profiles: np.ndarray  # (n_cell_types * n_batches, n_genes) expression shares, rows sum to 1
    bcv_gene: np.ndarray  # (n_genes,) sqrt(bcv_df / chi2(bcv_df))
    lib_sizes: np.ndarray  # (n_cells,) expected total counts per cell
    type_codes: np.ndarray  # (n_cells,) int64
    batch_codes: np.ndarray  # (n_cells,) int64


def simulate(cfg: SimulationConfig) -> SimulatedCounts:
    """Simulate a count matrix with cell types and batches.

    Args:
        cfg: Shape, seed and generative parameters.

    Returns:
        The counts with per-cell labels and gene names; identical for identical configs.
    """
    param_seq, counts_seq = np.random.SeedSequence(cfg.seed).spawn(2)
    params = _draw_params(cfg, np.random.Generator(np.random.PCG64(param_seq)))
    starts = range(0, cfg.n_cells, CHUNK_CELLS)
    blocks = [
        _draw_chunk(cfg, params, slice(start, start + CHUNK_CELLS), seq)
        for start, seq in zip(starts, counts_seq.spawn(len(starts)), strict=True)
    ]
    return SimulatedCounts(
        counts=sparse.vstack(blocks, format="csr", dtype=np.float32),
        celltype=_labels("type_", cfg.n_cell_types, 2)[params.type_codes],
        tech=_labels("batch_", cfg.n_batches, 1)[params.batch_codes],
        gene_names=_labels("gene_", cfg.n_genes, 5),
    )


def cell_type_proportions(n_cell_types: int) -> np.ndarray:
    """Return the Zipf-like cell-type shares ``1/k / sum(1/j)``, largest first."""
    weights = 1.0 / np.arange(1, n_cell_types + 1)
    return weights / weights.sum()


def _labels(prefix: str, n: int, min_width: int) -> np.ndarray:
    """Return ``n`` zero-padded labels that sort in numeric order, starting at 1."""
    width = max(min_width, len(str(n)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, n + 1)])


def _draw_params(cfg: SimulationConfig, rng: np.random.Generator) -> _Params:
    base = rng.gamma(cfg.mean_shape, 1.0 / cfg.mean_rate, size=cfg.n_genes)
    is_de = rng.random((cfg.n_cell_types, cfg.n_genes)) < cfg.de_prob
    log_de = rng.normal(cfg.de_loc, cfg.de_scale, size=is_de.shape)
    down = rng.random(is_de.shape) < 0.5
    de_factors = np.exp(np.where(is_de, np.where(down, -log_de, log_de), 0.0))
    log_batch = rng.normal(cfg.batch_loc, cfg.batch_scale, size=(cfg.n_batches, cfg.n_genes))
    chi2 = rng.chisquare(cfg.bcv_df, size=cfg.n_genes)
    lib_sizes = np.exp(rng.normal(cfg.lib_loc, cfg.lib_scale, size=cfg.n_cells))
    sizes = _group_sizes(cell_type_proportions(cfg.n_cell_types), cfg.n_cells)
    type_codes = rng.permutation(np.repeat(np.arange(cfg.n_cell_types), sizes))
    batch_codes = rng.permutation(np.arange(cfg.n_cells) % cfg.n_batches)
    # (type, batch, gene): normalised once per combination rather than once per cell
    profiles = (base * de_factors)[:, None, :] * np.exp(log_batch)[None, :, :]
    profiles /= profiles.sum(axis=2, keepdims=True)
    return _Params(
        profiles=profiles.reshape(-1, cfg.n_genes),
        bcv_gene=np.sqrt(cfg.bcv_df / chi2),
        lib_sizes=lib_sizes,
        type_codes=type_codes,
        batch_codes=batch_codes,
    )


def _group_sizes(shares: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` cells by ``shares`` (largest remainder), one cell per group first if possible."""
    base = 1 if n >= len(shares) else 0
    rest = n - base * len(shares)
    exact = shares * rest
    sizes = np.floor(exact).astype(np.int64)
    largest_remainder_first = np.argsort(sizes - exact, kind="stable")
    sizes[largest_remainder_first[: rest - sizes.sum()]] += 1
    return sizes + base


def _draw_chunk(
    cfg: SimulationConfig, params: _Params, rows: slice, seq: np.random.SeedSequence
) -> sparse.csr_matrix:
    """Draw the ``(rows, n_genes)`` counts of one chunk of cells."""
    groups = params.type_codes[rows] * cfg.n_batches + params.batch_codes[rows]
    means = params.profiles[groups] * params.lib_sizes[rows, None]
    rng = np.random.Generator(np.random.PCG64(seq))
    return draw_counts(rng, means, cfg.bcv_common, params.bcv_gene)


def draw_counts(
    rng: np.random.Generator, means: np.ndarray, bcv_common: float, bcv_gene: np.ndarray
) -> sparse.csr_matrix:
    """Draw Splatter's ``Poisson(Gamma(shape=1 / bcv^2, scale=mean * bcv^2))`` counts.

    With ``bcv = (bcv_common + 1 / sqrt(mean)) * bcv_gene``, that mixture is the negative
    binomial with size ``r = 1 / bcv^2`` and ``theta = mean * bcv^2``: ``p(0) = (1 + theta)^-r``,
    ``p(k) = p(k - 1) * (k - 1 + r) / k * theta / (1 + theta)``. Each entry with a mean up to
    :data:`INVERSE_CDF_MAX_MEAN` is drawn by inverting that CDF at one uniform ``u``; as
    ``p(0) >= exp(-mean) >= 1 - mean``, entries with ``u < 1 - mean`` are zeros without further
    work, so the cost follows the non-zero counts rather than the matrix size. Higher means are
    drawn as Gamma then Poisson.

    Args:
        rng: The random stream.
        means: ``(n_cells, n_genes)`` float64 expected counts, > 0.
        bcv_common: The common biological coefficient of variation.
        bcv_gene: ``(n_genes,)`` per-gene BCV factors, ``sqrt(df / chi2(df))`` in Splatter.

    Returns:
        ``(n_cells, n_genes)`` CSR float32 counts.
    """
    n_cells, n_genes = means.shape
    flat = means.ravel()
    u = rng.random(flat.shape)
    where = np.flatnonzero(u >= 1.0 - flat)  # the other entries are zeros
    rows, cols = np.divmod(where, n_genes)
    mean, u = flat[where], u[where]
    bcv2 = np.square((bcv_common + 1.0 / np.sqrt(mean)) * bcv_gene[cols])
    high = mean > INVERSE_CDF_MAX_MEAN
    values = _nb_inverse_cdf(u, mean, bcv2, ~high)
    values[high] = rng.poisson(rng.gamma(1.0 / bcv2[high], mean[high] * bcv2[high]))
    keep = values > 0
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=n_cells), out=indptr[1:])
    return sparse.csr_matrix((values[keep], cols[keep], indptr), shape=means.shape)


def _nb_inverse_cdf(
    u: np.ndarray, mean: np.ndarray, bcv2: np.ndarray, use: np.ndarray
) -> np.ndarray:
    """Return the smallest ``k`` with ``u < CDF(k)`` of the negative binomial where ``use``."""
    size = 1.0 / bcv2
    theta = mean * bcv2
    prob = np.exp(-size * np.log1p(theta))  # p(0) >= exp(-mean): no underflow below the cap
    counts = np.zeros(u.shape, dtype=np.float32)
    active = np.flatnonzero((u >= prob) & use)
    u, cdf, prob = u[active], prob[active], prob[active]
    size, q = size[active], theta[active] / (1.0 + theta[active])
    k = 0
    while active.size:  # total work: the sum of the counts
        k += 1
        prob *= (k - 1 + size) / k * q
        cdf += prob
        done = (u < cdf) | (prob == 0.0)  # prob == 0: the float64 tail is exhausted
        counts[active[done]] = k
        left = ~done
        active, u, cdf, prob, size, q = (a[left] for a in (active, u, cdf, prob, size, q))
    return counts
