"""Collect where and with what a run ran: git state, system and package versions.

:func:`get_environment_info` only collects and returns a JSON-ready dict, like accelerate's
``commands/env.py``; printing and writing it are someone else's job. It never raises: whatever
cannot be determined is None. Package versions come from installed metadata, so heavy packages
(scanpy, ray, wandb) are never imported here.

Besides versions, the system section holds what decides which kernels a run gets, and so its
bits: the CPU's vector instruction set torch dispatches on, the GPU model, SM count and compute
capability, the NVIDIA driver, and the CUDA, cuDNN, cuBLAS and Triton versions.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import torch

T = TypeVar("T")

_PACKAGE_DIR = Path(__file__).resolve().parent  # inside the project checkout when not installed
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")  # where a user name is not a secret


def get_environment_info(repo_path: str | Path | None = None) -> dict[str, Any]:
    """Return the git state, system description and package versions of this process.

    Args:
        repo_path: A path inside the git repository to describe. None: the repository holding
            this package's source (the project checkout), else the current directory's.

    Returns:
        ``{"git": {...}, "system": {...}, "packages": {...}}``:

        - ``git``: ``commit`` (hex SHA), ``branch`` (None on a detached HEAD), ``is_dirty``
          (tracked files differ from HEAD; untracked files do not count) and ``remote_url``
          (``origin``, else the first remote, with credentials stripped). Each is None when it
          cannot be determined: outside a repository, without a git binary, before the first
          commit.
        - ``system``: ``python_version``, ``platform``, ``processor``, ``hostname``,
          ``torch_version`` (and ``pytorch_version``, the same), ``cuda_available``,
          ``cuda_version`` and ``cudnn_version`` (those torch was built with; None for a CPU
          build), ``gpu_count``, ``gpu_names``,
          ``gpu_memory`` (total memory per device, in bytes), ``gpu_sm_counts`` (streaming
          multiprocessors per device), ``gpu_capabilities`` (``"9.0"``), ``nvidia_driver``
          (the kernel driver's version, ``"580.159.04"``), ``cublas_version`` (of the cuBLAS
          library loaded, ``"13.1.0"``), ``triton_version``, ``cpu_capability`` (the vector
          instruction set torch's CPU kernels use: ``"AVX512"``, ``"AVX2"``, ...),
          ``cpu_count`` (logical CPUs of the machine) and ``torch_num_threads``.
        - ``packages``: every installed distribution and its version, as ``pip freeze``
          lists them, by normalized name (``"torch"``, ``"pyyaml"``, ``"scikit-learn"``);
          torch's also as ``"pytorch"``.

    Note:
        With a GPU present this initializes CUDA in the calling process (not cuBLAS): call
        :func:`trainables.seeding.set_seed` first, and not in a parent that later forks
        CUDA workers.
    """
    return {"git": git_info(repo_path), "system": _system_info(), "packages": _package_versions()}


def strip_credentials(url: str) -> str:
    """Return a remote URL without the user name and password it may carry.

    ``https://user:token@host/x.git`` and ``https://token@host/x.git`` become
    ``https://host/x.git``. For ``ssh://`` URLs only a password is removed: the user name
    (``git``) is needed to clone and is not a secret. scp-like addresses
    (``git@github.com:org/x.git``) and local paths are returned unchanged.
    """
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)  # a password may itself contain "@"
    if parts.scheme in _SSH_SCHEMES:
        host = f"{userinfo.split(':', 1)[0]}@{host}"
    return urlunsplit(parts._replace(netloc=host))


# --- sections ------------------------------------------------------------------------------


def git_info(repo_path: str | Path | None = None) -> dict[str, Any]:
    """The ``git`` part of :func:`get_environment_info` alone (no CUDA, no package scan)."""
    info: dict[str, Any] = dict.fromkeys(("commit", "branch", "is_dirty", "remote_url"))
    candidates = [_PACKAGE_DIR, Path.cwd()] if repo_path is None else [Path(repo_path)]
    repo = _open_repo(candidates)
    if repo is None:
        return info
    with repo:
        info["commit"] = _try(lambda: repo.head.commit.hexsha)  # ValueError: no commits yet
        info["branch"] = _try(lambda: repo.active_branch.name)  # TypeError: detached HEAD
        info["is_dirty"] = _try(lambda: bool(repo.is_dirty(untracked_files=False)))
        info["remote_url"] = _try(lambda: _remote_url(repo))
    return info


def _open_repo(candidates: list[Path]) -> Any:
    """Return a ``git.Repo`` for the first candidate inside a repository, else None."""
    try:
        import git  # raises ImportError at import when there is no git binary
    except ImportError:
        return None
    for candidate in candidates:
        try:
            return git.Repo(candidate, search_parent_directories=True)
        except (git.exc.GitError, OSError, ValueError):
            continue
    return None


def _remote_url(repo: Any) -> str | None:
    if not repo.remotes:
        return None
    names = [remote.name for remote in repo.remotes]
    remote = repo.remote("origin" if "origin" in names else names[0])
    return strip_credentials(remote.url)


def _system_info() -> dict[str, Any]:
    cuda_available = torch.cuda.is_available()
    # Device names and memory initialize CUDA in this process (see the Note above).
    devices = range(torch.cuda.device_count()) if cuda_available else range(0)
    properties = [torch.cuda.get_device_properties(i) for i in devices]
    return {
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),  # "" on many Linux systems
        "hostname": socket.gethostname(),
        "torch_version": str(torch.__version__),
        "pytorch_version": str(torch.__version__),
        "cuda_available": cuda_available,
        "cuda_version": torch.version.cuda,
        "cudnn_version": _try(_cudnn_version),
        "gpu_count": len(devices),
        "gpu_names": [torch.cuda.get_device_name(i) for i in devices],
        "gpu_memory": [p.total_memory for p in properties],
        "gpu_sm_counts": [p.multi_processor_count for p in properties],
        "gpu_capabilities": [f"{p.major}.{p.minor}" for p in properties],
        "nvidia_driver": _try(_nvidia_driver) if cuda_available else None,
        "cublas_version": _try(_cublas_version) if cuda_available else None,
        "triton_version": _try(_triton_version),
        "cpu_capability": _try(torch.backends.cpu.get_cpu_capability),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
    }


def _cudnn_version() -> int | None:
    return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None


def _nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version: from /proc on Linux, else from nvidia-smi."""
    try:
        found = driver_version(Path("/proc/driver/nvidia/version").read_text())
        if found:
            return found
    except OSError:
        pass
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout.split()
    return out[0] if out else None


def driver_version(proc_text: str) -> str | None:
    """The version in ``/proc/driver/nvidia/version``'s text ("... Kernel Module  580.159.04")."""
    found = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", proc_text)
    return found.group(1) if found else None


def _cublas_version() -> str | None:
    """The version of the cuBLAS library torch loaded, as ``major.minor.patch``.

    torch does not report it; ``cublasGetProperty`` needs no handle, so asking initializes no
    cuBLAS state. The library is the one mapped into this process (Linux), else the one the
    loader finds.
    """
    library = _loaded_library("libcublas.so") or "libcublas.so"
    cublas = ctypes.CDLL(library)
    parts = []
    for prop in (0, 1, 2):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
        value = ctypes.c_int()
        if cublas.cublasGetProperty(prop, ctypes.byref(value)) != 0:
            return None
        parts.append(str(value.value))
    return ".".join(parts)


def _loaded_library(stem: str) -> str | None:
    """The path of a shared library mapped into this process whose name starts with ``stem``."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in maps:
        path = line.split()[-1] if line.split() else ""
        if Path(path).name.startswith(stem):
            return path
    return None


def _triton_version() -> str | None:
    for name in ("triton", "pytorch-triton", "triton-windows"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _package_versions() -> dict[str, str]:
    """Every installed distribution's version by normalized name (PEP 503), sorted.

    torch's version is also filed as ``pytorch``, the name W&B layouts (and conda) use. Read
    once per process (~0.1 s, and a training host records it for every trial it admits):
    what a process has imported does not change when its packages do on disk.
    """
    return dict(_scanned_package_versions())


@functools.cache
def _scanned_package_versions() -> tuple[tuple[str, str], ...]:
    versions = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
    if "torch" in versions:
        versions.setdefault("pytorch", versions["torch"])
    return tuple(sorted(versions.items()))


def _try(get: Callable[[], T]) -> T | None:
    # Provenance must never break a run: any failure to read a value records None.
    try:
        return get()
    except Exception:
        return None
