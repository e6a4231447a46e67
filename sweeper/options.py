"""Where a sweep's trials run and its results go, and what is checked of it before Ray starts.

Everything a user can get wrong on the command line or in the environment is checked here, so
that it ends in one line naming the option, before Ray starts and before anything is written:
``--gpus`` and ``--cpus``, ``--name``, the storage (a creatable, writable folder), the GPUs
of this machine, the W&B key for online logging, and the sweep folder (empty, or resumable).
"""

from __future__ import annotations

import netrc
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from sweeper.spec import LoadedSweep, SweepError
from sweeper.storage import SweepFolder
from trainables.files import OutputFolderError, is_uri, prepare_output_folder
from trainables.schema import ConfigError


@dataclass(frozen=True)
class DriverOptions:
    """Command-line choices that override or complete the sweep file."""

    gpus: int | None = None  # None: all GPUs of the local machine or cluster
    cpus: int | None = None  # None: all CPUs
    address: str | None = None  # an existing Ray cluster ("auto", "ray://host:10001", ...)
    name: str | None = None
    storage: str | None = None
    resume: bool = False
    spread_replicates: bool = False  # pin replicate i to node i mod n (audits; multi-node)

    def __post_init__(self):
        if self.gpus is not None and self.gpus < 0:
            raise ConfigError("", f"got {self.gpus}; allowed: an integer >= 0", "--gpus")
        if self.cpus is not None and self.cpus < 1:
            raise ConfigError("", f"got {self.cpus}; allowed: an integer >= 1", "--cpus")

    @property
    def cluster_address(self) -> str | None:
        """The Ray cluster the sweep joins: ``--address``, else ``RAY_ADDRESS`` (None: none)."""
        return self.address or os.environ.get("RAY_ADDRESS")


def apply_options(sweep: LoadedSweep, options: DriverOptions) -> LoadedSweep:
    """Return the sweep with ``--name`` / ``--storage`` applied.

    Raises:
        ConfigError: ``--name`` is not a folder name (naming ``--name``).
    """
    spec = sweep.spec
    for option, key, value in (
        ("--name", "name", options.name),
        ("--storage", "storage_path", options.storage),
    ):
        if value is None:
            continue
        try:
            spec = replace(spec, **{key: value})
        except ConfigError as err:
            raise ConfigError("", err.message, option) from None
    return replace(sweep, spec=spec)


def sweep_dir(sweep: LoadedSweep) -> SweepFolder:
    """The sweep folder ``<storage>/<name>``: an absolute path or a URI."""
    storage = sweep.spec.storage_path
    if not is_uri(storage):
        storage = str(Path(storage).expanduser().resolve())
    return SweepFolder(f"{storage.rstrip('/')}/{sweep.spec.name}")


def check_before_ray(sweep: LoadedSweep, options: DriverOptions) -> Path | None:
    """Check everything that can be checked before Ray starts; make the sweep folder.

    Returns:
        The outermost folder created for it (None: the sweep folder existed), for
        :func:`discard_unstarted`.

    Raises:
        SweepError: Online W&B without a key, a sweep folder that holds a sweep (without
            ``--resume``) or nothing to resume, storage that cannot hold the folder, or more
            ``--gpus`` than this machine has (when Ray is started here).
    """
    folder = sweep_dir(sweep)
    check_wandb(sweep)
    check_local_gpus(options)
    check_folder(folder, options.resume)
    return make_writable(folder)


def check_wandb(sweep: LoadedSweep) -> None:
    """Refuse online W&B logging when no API key is configured (env or ``wandb login``)."""
    if sweep.spec.wandb.mode != "online" or os.environ.get("WANDB_API_KEY"):
        return
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    raise SweepError(
        "wandb.mode is online but no W&B API key is configured: run `wandb login`, set "
        "WANDB_API_KEY, or use wandb.mode: offline"
    )


def check_local_gpus(options: DriverOptions) -> None:
    """Refuse more ``--gpus`` than this machine has, when the sweep starts its own Ray."""
    import ray

    if options.gpus is None or options.cluster_address:
        return
    if ray.is_initialized():  # a Ray this process started, with the GPUs it was given
        return
    import torch

    available = torch.cuda.device_count()
    if options.gpus > available:
        raise SweepError(
            f"--gpus {options.gpus}: this machine has {available} GPU(s) that torch can use "
            "(--gpus 0 runs trials on the CPU; --address for a cluster)"
        )


def check_folder(folder: SweepFolder, resume: bool) -> None:
    """The folder must be empty (a new sweep) or hold a sweep's state (``--resume``)."""
    from ray import tune

    if resume and not tune.Tuner.can_restore(folder.location):
        raise SweepError(f"{folder}: nothing to resume (no sweep state found there)")
    if not resume and not folder.is_empty():
        raise SweepError(
            f"{folder} already holds a sweep: pass --resume to continue it, or --name to start "
            "another"
        )


def make_writable(folder: SweepFolder) -> Path | None:
    """Create the sweep folder (a local or shared path) and prove a file can be written there.

    Returns:
        The outermost folder created (the sweep folder or an ancestor), or None.

    Raises:
        SweepError: The storage path is a file, lies under one, or is not writable.
    """
    if folder.local is None:  # object stores have no folders to create; Ray checks access
        return None
    try:
        return prepare_output_folder(folder.local)
    except OutputFolderError as err:
        reason = str(err).rsplit("cannot write here ", 1)[-1]
        raise SweepError(
            f"storage: cannot write the sweep folder {folder} {reason}: choose a writable "
            "folder with --storage or storage_path"
        ) from None


def discard_unstarted(folder: SweepFolder, resume: bool, created: Path | None) -> None:
    """Leave the storage as it was if a new sweep failed before it could be resumed.

    A sweep that fails before Tune saved its state can be neither resumed nor rerun into a
    folder that is not empty. A new sweep starts in an empty folder, so all that is in it was
    written by this run: it goes, with the folders made for it (``created``). Once Tune's
    state is there, ``--resume`` continues the sweep, and nothing is taken away.
    """
    from ray import tune

    if resume or folder.local is None or tune.Tuner.can_restore(folder.location):
        return
    shutil.rmtree(created or folder.local, ignore_errors=True)
    if created is None:  # the sweep folder was there, empty: leave it so
        folder.local.mkdir()
