"""Where a data config's input lives: the simulator, a named public dataset, or a file.

Named datasets are kept in the cache folder (``datasets/``) and downloaded only when the config
allows it; prepared arrays are cached beside them (``prepared/``, see :mod:`trainables.data`).
No AnnData here: this module only finds files.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from trainables.config import SIMULATED, DataConfig
from trainables.files import atomic_path
from trainables.schema import suggest

CACHE_ENV = "INVAE_SWEEP_CACHE"
"""Environment variable naming the cache folder when ``DataConfig.cache_dir`` is not set."""


@dataclass(frozen=True)
class NamedDataset:
    """A public dataset that ``data_path`` can name; its file lives in the cache folder."""

    filename: str
    url: str
    doi: str


NAMED_DATASETS = {
    # scIB human pancreas (Luecken et al., 2022): 16,382 cells x 19,093 genes, counts in
    # layers["counts"], obs "celltype" (14) and "tech" (9). The URL is the figshare download
    # link used by scCobra, scPRINT and OpenProblems for this file.
    "scib_pancreas": NamedDataset(
        filename="human_pancreas_norm_complexBatch.h5ad",
        url="https://figshare.com/ndownloader/files/24539828",
        doi="10.6084/m9.figshare.12420968",
    ),
}


class DataError(ValueError):
    """The input data are missing or unusable; the message names the file, layer or obs key."""


class DataWarning(UserWarning):
    """The input data are usable but something in them cannot help the model (named)."""


def cache_dir(cfg: DataConfig) -> Path:
    """Return the cache folder: ``cfg.cache_dir``, else ``$INVAE_SWEEP_CACHE``, else the default."""
    return Path(cfg.cache_dir or os.environ.get(CACHE_ENV) or "~/.cache/invae-sweep").expanduser()


def input_path(cfg: DataConfig) -> Path | None:
    """Return the input file (``None`` for simulated data), downloading a named one if allowed."""
    if cfg.data_path == SIMULATED:
        return None
    named = NAMED_DATASETS.get(cfg.data_path)
    if named is None:
        path = Path(cfg.data_path).expanduser()
        if not path.is_file():
            others = [SIMULATED, *NAMED_DATASETS]
            raise DataError(
                f"{path}: file not found (data_path is an .h5ad file, a named dataset "
                f"{others[1:]} or {SIMULATED!r}){suggest(cfg.data_path, others)}"
            )
        return path
    path = cache_dir(cfg) / "datasets" / named.filename
    if not path.is_file():
        if not cfg.download:
            raise DataError(
                f"dataset {cfg.data_path!r}: {path} not found; put {named.filename} there "
                f"(DOI {named.doi}, {named.url}) or set download: true to fetch it"
            )
        _download(named.url, path)
    return path


def _download(url: str, path: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "invae-sweep"})
    try:
        with (
            atomic_path(path, suffix=".part") as tmp,
            tmp.open("wb") as out,
            urllib.request.urlopen(request, timeout=60) as response,
        ):
            shutil.copyfileobj(response, out, length=1 << 20)
    except OSError as err:  # urllib's URLError is an OSError
        raise DataError(f"could not download {url} to {path}: {err}") from err
