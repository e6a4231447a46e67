"""Prepared training arrays and their on-disk cache (NumPy and SciPy only, no AnnData).

:class:`PreparedData` is what a trial trains on; :class:`StoredData` is the compact form the
cache holds (sparse counts, covariate codes and split rows), from which :func:`assemble` builds
the dense splits whether or not the cache was hit.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from trainables.files import atomic_write_bytes

PREP_VERSION = 1
"""Bump whenever preprocessing changes what ``prepare_data`` returns (invalidates caches)."""


@dataclass(frozen=True, eq=False)
class Split:
    """One set of cells, ready for training.

    Attributes:
        counts: ``(n_cells, n_genes)`` float32 raw counts of the selected genes, C-contiguous.
        bio: ``(n_cells, n_bio)`` float32 one-hot of all bio keys, concatenated in key order.
        tech: ``(n_cells, n_tech)`` float32 one-hot of all tech keys.
        bio_codes: ``(n_cells, len(bio_keys))`` int64 category codes.
        tech_codes: ``(n_cells, len(tech_keys))`` int64 category codes.
        cell_index: ``(n_cells,)`` int64 row of each cell in the input AnnData.
    """

    counts: np.ndarray
    bio: np.ndarray
    tech: np.ndarray
    bio_codes: np.ndarray
    tech_codes: np.ndarray
    cell_index: np.ndarray

    @property
    def n_cells(self) -> int:
        """Number of cells in the split."""
        return self.counts.shape[0]


@dataclass(frozen=True, eq=False)
class PreparedData:
    """Train and validation splits plus what is needed to interpret their columns.

    Attributes:
        train: The training cells.
        val: The validation cells.
        genes: Selected genes, in column order (input order).
        bio_categories: Per bio key, the category names in one-hot order.
        tech_categories: Per tech key, the category names in one-hot order.
        source: ``data_path``, ``input_sha256`` (for simulated data: of the simulation config),
            ``n_cells_input``, ``n_genes_input``, ``n_cells_dropped`` (no counts in the selected
            genes), ``cache_key`` and ``prepared_sha256`` (of the arrays trained on).
    """

    train: Split
    val: Split
    genes: tuple[str, ...]
    bio_categories: dict[str, tuple[str, ...]]
    tech_categories: dict[str, tuple[str, ...]]
    source: dict[str, Any]

    @property
    def n_genes(self) -> int:
        """Number of selected genes."""
        return len(self.genes)

    @property
    def n_bio(self) -> int:
        """Width of the biological one-hot block."""
        return sum(len(c) for c in self.bio_categories.values())

    @property
    def n_tech(self) -> int:
        """Width of the technical one-hot block."""
        return sum(len(c) for c in self.tech_categories.values())

    def summary(self) -> dict[str, Any]:
        """Return sizes, genes, categories and source as a JSON-friendly dict."""
        return {
            "n_cells_train": self.train.n_cells,
            "n_cells_val": self.val.n_cells,
            "n_genes": self.n_genes,
            "n_bio": self.n_bio,
            "n_tech": self.n_tech,
            "genes": list(self.genes),
            "categories": {
                "bio": {k: list(v) for k, v in self.bio_categories.items()},
                "tech": {k: list(v) for k, v in self.tech_categories.items()},
            },
            "source": dict(self.source),
        }


@dataclass(frozen=True, eq=False)
class StoredData:
    """What the cache holds: everything :class:`PreparedData` is rebuilt from."""

    counts: sparse.csr_matrix  # (n_kept, n_genes) float32
    codes: np.ndarray  # (n_kept, n_bio_keys + n_tech_keys) int64
    cell_index: np.ndarray  # (n_kept,) int64 rows in the input
    train: np.ndarray  # (n_train,) int64 rows of the kept cells
    val: np.ndarray  # (n_val,) int64
    meta: dict[str, Any]  # genes, bio/tech categories (lists of [key, names]), source


def assemble(stored: StoredData, n_bio_keys: int) -> PreparedData:
    """Build the splits from what the cache holds (the same path with or without a cache hit)."""
    meta = stored.meta
    sizes = [len(names) for _, names in meta["bio"] + meta["tech"]]

    def split(rows: np.ndarray) -> Split:
        codes = stored.codes[rows]
        onehot = [np.eye(n, dtype=np.float32)[codes[:, j]] for j, n in enumerate(sizes)]
        empty = np.zeros((len(rows), 0), dtype=np.float32)
        return Split(
            counts=np.ascontiguousarray(stored.counts[rows].toarray(), dtype=np.float32),
            bio=np.concatenate([empty, *onehot[:n_bio_keys]], axis=1),
            tech=np.concatenate([empty, *onehot[n_bio_keys:]], axis=1),
            bio_codes=np.ascontiguousarray(codes[:, :n_bio_keys]),
            tech_codes=np.ascontiguousarray(codes[:, n_bio_keys:]),
            cell_index=stored.cell_index[rows],
        )

    return PreparedData(
        train=split(stored.train),
        val=split(stored.val),
        genes=tuple(meta["genes"]),
        bio_categories={key: tuple(names) for key, names in meta["bio"]},
        tech_categories={key: tuple(names) for key, names in meta["tech"]},
        source={**meta["source"], "prepared_sha256": stored_digest(stored)},
    )


def stored_digest(stored: StoredData) -> str:
    """SHA-256 of what training sees: counts, covariate codes and split rows (not the meta).

    Two runs whose prepared data have the same digest trained on the same numbers, whatever
    scanpy, anndata or NumPy version prepared them.
    """
    sha = hashlib.sha256()
    arrays = (
        stored.counts.data,
        stored.counts.indices,
        stored.counts.indptr,
        np.asarray(stored.counts.shape, dtype=np.int64),
        stored.codes,
        stored.cell_index,
        stored.train,
        stored.val,
    )
    for array in arrays:
        array = np.ascontiguousarray(array)
        sha.update(f"{array.dtype.str}:{array.shape}:".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def write_cache(path: Path, stored: StoredData) -> None:
    """Write the cache file atomically (temporary file, then rename); failure only warns."""
    arrays = {
        "data": stored.counts.data,
        "indices": stored.counts.indices,
        "indptr": stored.counts.indptr,
        "shape": np.array(stored.counts.shape),
        "codes": stored.codes,
        "cell_index": stored.cell_index,
        "train": stored.train,
        "val": stored.val,
    }
    meta = json.dumps({**stored.meta, "prep_version": PREP_VERSION})
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(meta), **arrays)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:
        warnings.warn(f"could not write the data cache {path}: {err}", stacklevel=3)


def read_cache(path: Path, key: str) -> StoredData | None:
    """Return the cached result, or ``None`` if absent; a corrupt or stale file only warns."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta["prep_version"] != PREP_VERSION or meta["source"]["cache_key"] != key:
                raise ValueError("written for another input or version")
            counts = sparse.csr_matrix(
                (npz["data"], npz["indices"], npz["indptr"]), shape=tuple(npz["shape"])
            )
            stored = StoredData(
                counts, npz["codes"], npz["cell_index"], npz["train"], npz["val"], meta
            )
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(
            f"ignoring the unreadable data cache {path} ({err}); rebuilding", stacklevel=3
        )
        return None
    return stored
