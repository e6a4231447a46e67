"""Rerun a recorded run and prove it gives the same bits: ``invae-reproduce RUN_DIR``.

Automates "reproducing a run": read the recorded run from its files (its fingerprint
recomputed from them, as ``invae-verify`` does), rerun the same config and seed here, and
compare the two with the one comparison of runs: fingerprints, and where they differ the first
diverging epoch, the differing tensors and the environment fields (git commit, packages, torch,
CUDA, cuDNN, cuBLAS, driver, GPU) that tell why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sweeper.storage import SweepFolder
from sweeper.verify.comparison import compare_runs
from sweeper.verify.evidence import read_evidence
from sweeper.verify.records import Alteration, Comparison
from sweeper.verify.seal import FolderReader
from trainables.constants import RUN_FILE
from trainables.standalone import run_standalone


@dataclass(frozen=True)
class Reproduction:
    """A recorded run against its rerun.

    Attributes:
        comparison: The recorded run (``recorded``) against the rerun (``rerun``), on the
            digests recomputed from both runs' files.
        recorded_altered: Where the recorded run's files disagree with its own record.
        rerun: The rerun's folder.
    """

    comparison: Comparison
    recorded_altered: tuple[Alteration, ...]
    rerun: str

    @property
    def reproduced(self) -> bool:
        """Whether the rerun has the recorded bits and the recorded files agree with each other."""
        return self.comparison.identical and not self.recorded_altered


def reproduce_run(
    run_dir: str | Path, out_dir: str | Path, overwrite: bool = False
) -> Reproduction:
    """Rerun a recorded run into ``out_dir`` and compare it with the original.

    Args:
        run_dir: A folder holding ``run.json`` and ``model.pt``.
        out_dir: Where the rerun's ``run.json`` and ``model.pt`` go.
        overwrite: Replace a run already in ``out_dir`` (else it is refused, before training).

    Raises:
        ResultFileError: ``run.json`` or ``model.pt`` is missing, corrupt or not of its kind.
        ConfigError: The recorded config is not usable (e.g. it has no data config).
        OutputFolderError: ``out_dir`` holds a run (without ``overwrite``) or is not writable.
    """
    recorded = read_evidence(FolderReader(SweepFolder(run_dir)), "", "recorded")
    source = str(Path(run_dir) / RUN_FILE)
    train_cfg = recorded.record.config.train_config(source)
    data_cfg = recorded.record.config.data_config(source)
    run_standalone(train_cfg, data_cfg, out_dir, overwrite=overwrite)
    rerun = read_evidence(FolderReader(SweepFolder(out_dir)), "", "rerun")
    return Reproduction(compare_runs(recorded, rerun), recorded.altered, str(out_dir))
