"""Build ``tests/data/kang_small.h5ad``, the small real-count fixture of the data tests.

A seeded subset of the Kang et al. (2018) PBMC counts (``/work/shared/data/kang_pbmc_counts.h5ad``,
see ``/work/shared/data/README.md``): cells sampled stratified over ``cell_type`` x
``condition``, genes the most expressed of those cells plus a random sample of the others, in
their original order. Written with gzip compression; counts stay float32 in a CSR ``X``.

Usage::

    python scripts/make_test_data.py [--source PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad
import numpy as np
from scipy import sparse
from sklearn.model_selection import train_test_split

SOURCE = Path("/work/shared/data/kang_pbmc_counts.h5ad")
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "kang_small.h5ad"


def subset(adata: ad.AnnData, n_cells: int, n_top: int, n_random: int, seed: int) -> ad.AnnData:
    """Return ``n_cells`` stratified cells and ``n_top`` + ``n_random`` genes of ``adata``."""
    strata = adata.obs["cell_type"].astype(str) + "|" + adata.obs["condition"].astype(str)
    cells, _ = train_test_split(
        np.arange(adata.n_obs), train_size=n_cells, stratify=strata, random_state=seed
    )
    cells = np.sort(cells)
    totals = np.asarray(adata.X[cells].sum(axis=0)).ravel()
    top = np.argsort(-totals, kind="stable")[:n_top]
    rest = np.setdiff1d(np.arange(adata.n_vars), top)
    others = np.random.default_rng(seed).choice(rest, size=n_random, replace=False)
    genes = np.sort(np.concatenate([top, others]))
    small = adata[cells, genes].copy()
    small.X = sparse.csr_matrix(small.X, dtype=np.float32)
    small.obs = small.obs[["cell_type", "condition"]].copy()
    small.uns = {"subset_of": "kang_pbmc_counts.h5ad (Kang et al. 2018, GEO GSE96583)"}
    return small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--n-cells", type=int, default=400)
    parser.add_argument("--n-top", type=int, default=500, help="most expressed genes kept")
    parser.add_argument("--n-random", type=int, default=1000, help="other genes kept at random")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    small = subset(ad.read_h5ad(args.source), args.n_cells, args.n_top, args.n_random, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    small.write_h5ad(args.out, compression="gzip", compression_opts=9)
    counts = small.obs.groupby(["cell_type", "condition"], observed=True).size()
    print(f"{args.out}: {small.n_obs} cells x {small.n_vars} genes, {args.out.stat().st_size:,} B")
    print(counts.to_string())


if __name__ == "__main__":
    main()
