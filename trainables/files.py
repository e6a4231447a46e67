"""Atomic file writes and checked reads: a crash never leaves a half-written result file."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def is_uri(location: str) -> bool:
    """Whether a storage location is a URI (``s3://bucket/x``) rather than a path."""
    return "://" in location


def storage_filesystem(location: str) -> tuple[Any, str]:
    """A storage location's pyarrow filesystem and its path on it (a URI or a local path)."""
    from pyarrow import fs as pafs  # not at import: readers of local results don't need it

    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), location


class ResultFileError(ValueError):
    """A result file is missing or unreadable; the message names the file."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        super().__init__(f"{path}: {reason}")


class OutputFolderError(ValueError):
    """A folder results are to be written into cannot be used; the message names it and why."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        super().__init__(f"{path}: {reason}")


def prepare_output_folder(
    path: str | Path, results: tuple[str, ...] = (), overwrite: bool = False
) -> Path | None:
    """Make ``path`` a folder that results can be written into, before any work is done.

    Args:
        path: The folder (created, with its parents, if missing).
        results: Names of the files the work will write there.
        overwrite: Whether results already there may be replaced.

    Returns:
        The outermost folder created here (``path`` or an ancestor), None if ``path`` existed:
        work that fails before writing anything takes it away again (``remove_if_empty``).

    Raises:
        OutputFolderError: ``path`` is a file or lies under one, is not writable, or holds one
            of ``results`` and ``overwrite`` is off.
    """
    path = Path(path)
    held = [name for name in results if (path / name).exists()]
    if held and not overwrite:
        raise OutputFolderError(
            path, f"already holds {', '.join(held)}: choose another folder, or pass --overwrite"
        )
    created = None
    for folder in (path, *path.parents):  # the outermost of the folders that are missing
        if folder.exists():
            break
        created = folder
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        if created is not None:
            remove_if_empty(created)
        raise OutputFolderError(path, f"cannot write here ({err.strerror or err})") from None
    return created


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` and the empty folders below it, if no file is anywhere below it."""
    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside ``path`` to write to; renamed onto ``path`` if the block succeeds.

    A crash or error inside the block leaves ``path`` as it was and no temporary behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; results are for sharing
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, payload: bytes) -> Path:
    """Write ``payload`` to a temporary file beside ``path``, fsync it, then rename it."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_bytes(data: Any) -> bytes:
    """``data`` as indented JSON, the one format of every result file.

    Floats are written with Python's shortest round-trip repr, so every bit survives a
    write/read cycle; non-finite values are written as ``NaN``/``Infinity``.
    """
    return (json.dumps(data, indent=2) + "\n").encode()


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (:func:`json_bytes`), atomically."""
    return atomic_write_bytes(path, json_bytes(data))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, then rename it into place."""
    import torch  # here, so that modules writing only JSON or bytes don't load torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: str | Path, weights_only: bool = True, payload: bytes | None = None) -> Any:
    """Load a file written by :func:`atomic_torch_save` (tensors onto the CPU).

    Args:
        path: The file.
        weights_only: Refuse arbitrary pickled objects; pass False only for this project's own
            training states, which hold NumPy RNG states.
        payload: The file's bytes, when they were read already (``path`` then only names it).

    Raises:
        ResultFileError: The file is missing or corrupt.
    """
    import torch

    path = Path(path)
    if payload is None and not path.is_file():
        raise ResultFileError(path, "file not found")
    source = path if payload is None else io.BytesIO(payload)
    try:
        return torch.load(source, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        reason = " ".join(str(err).split())[:200]  # one line, whatever torch said
        raise ResultFileError(path, f"unreadable or corrupt torch file ({reason})") from None
