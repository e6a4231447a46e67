"""Where a sweep lives: a local or shared folder, or a cloud URI (``s3://``, ``gs://``, ...).

All reads and writes of sweep-level files go through :class:`SweepFolder`, which uses pyarrow
filesystems, as Ray does for checkpoints. On local and shared filesystems files are written
atomically (temporary file, then rename); object stores replace objects whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pyarrow import fs as pafs

from sweeper.spec import SweepError
from trainables.files import (
    ResultFileError,
    atomic_write_bytes,
    is_uri,
    json_bytes,
    storage_filesystem,
)


class SweepFolder:
    """One sweep's folder ``<storage>/<name>``, local or remote.

    Args:
        location: An absolute local path or a URI.
    """

    def __init__(self, location: str | Path):
        location = str(location)
        if is_uri(location):
            self.location = location.rstrip("/")
        else:
            self.location = str(Path(location).expanduser().resolve())
        self.fs, self.root = storage_filesystem(self.location)

    def __str__(self) -> str:
        return self.location

    @property
    def local(self) -> Path | None:
        """The folder as a local path, or None for remote storage."""
        return None if is_uri(self.location) else Path(self.root)

    @property
    def storage_path(self) -> str:
        """The parent location (Ray's ``storage_path``)."""
        return self.location.rsplit("/", 1)[0]

    @property
    def name(self) -> str:
        """The folder's name (Ray's experiment name)."""
        return self.location.rsplit("/", 1)[1]

    def path(self, relative: str) -> str:
        """The filesystem path of a file relative to the folder."""
        return posixpath.join(self.root, relative)

    def relative(self, fs_path: str) -> str:
        """A filesystem path (as Ray reports trial paths) relative to the folder."""
        return posixpath.relpath(fs_path, self.root)

    def exists(self, relative: str) -> bool:
        """Whether a file or folder exists below the folder."""
        return self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound

    def is_empty(self) -> bool:
        """Whether the folder is missing or holds nothing."""
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        return not self.fs.get_file_info(selector)

    def read_bytes(self, relative: str) -> bytes:
        """Read a file. Raises ResultFileError naming it when it is missing."""
        try:
            with self.fs.open_input_stream(self.path(relative)) as stream:
                return stream.read()
        except FileNotFoundError:
            raise ResultFileError(f"{self.location}/{relative}", "file not found") from None
        except OSError as err:
            reason = " ".join(str(err).split())  # one line
            raise ResultFileError(f"{self.location}/{relative}", f"unreadable ({reason})") from None

    def file_sha256(self, relative: str, chunk: int = 1 << 22) -> str:
        """A file's SHA-256, read in 4 MiB chunks. Raises ResultFileError naming it."""
        sha = hashlib.sha256()
        try:
            with self.fs.open_input_stream(self.path(relative)) as stream:
                while block := stream.read(chunk):
                    sha.update(block)
        except OSError as err:
            raise ResultFileError(f"{self.location}/{relative}", f"unreadable ({err})") from None
        return sha.hexdigest()

    def list_files(self) -> list[str]:
        """Every file below the folder, as a path relative to it (links are followed)."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        return [
            self.relative(info.path)
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        ]

    def read_json(self, relative: str) -> Any:
        """Read a JSON file. Raises ResultFileError naming it when missing or corrupt."""
        try:
            return json.loads(self.read_bytes(relative))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ResultFileError(f"{self.location}/{relative}", f"corrupt JSON ({err})") from None

    def write_bytes(self, relative: str, payload: bytes) -> str:
        """Write a file whole (atomically on local and shared filesystems); return its location."""
        if self.local is not None:
            return str(atomic_write_bytes(self.local / relative, payload))
        self.fs.create_dir(posixpath.dirname(self.path(relative)), recursive=True)
        with self.fs.open_output_stream(self.path(relative)) as stream:
            stream.write(payload)
        return f"{self.location}/{relative}"

    def write_json(self, relative: str, data: Any) -> str:
        """Write indented JSON (floats round-trip exactly); return its location."""
        return self.write_bytes(relative, json_bytes(data))

    def copy(self, source: str, target: str) -> None:
        """Copy one file within the folder."""
        self.write_bytes(target, self.read_bytes(source))

    def download(self) -> Path:
        """The folder as a local path: itself, or a temporary copy of a remote one."""
        if self.local is not None:
            return self.local
        target = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        pafs.copy_files(self.root, str(target), source_filesystem=self.fs)
        return target

    def check_visible_from_all_nodes(self) -> None:
        """Refuse a folder that some node of the Ray cluster cannot see.

        Cloud URIs pass. A path is checked by writing a marker file and asking a task on every
        alive node whether it sees it.

        Raises:
            SweepError: Some nodes do not see the folder (a node-local path on a multi-node
                cluster), naming them.
        """
        if self.local is None:
            return
        marker = f".storage-check-{uuid.uuid4().hex}"
        self.write_bytes(marker, b"")
        try:
            missing = nodes_missing(str(self.local / marker))
        finally:
            (self.local / marker).unlink(missing_ok=True)
        if missing:
            raise SweepError(
                f"storage path {self.location} is not visible from {len(missing)} node(s) "
                f"({', '.join(missing)}): on a multi-node cluster use a filesystem shared by "
                "every node at the same path, or a cloud URI (s3://..., gs://...)"
            )


def nodes_missing(path: str) -> list[str]:
    """The alive Ray nodes (as ``ip (node id)``) on which ``path`` does not exist."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def exists(candidate: str) -> bool:
        return os.path.exists(candidate)

    nodes = [n for n in ray.nodes() if n["Alive"]]
    checks = [
        exists.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(path)
        for n in nodes
    ]
    return [
        f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})"
        for n, seen in zip(nodes, ray.get(checks), strict=True)
        if not seen
    ]
