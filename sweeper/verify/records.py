"""The verification tree: what ``invae-verify`` found, as typed records (``verification.json``).

Every digest and status in it was recomputed from the sweep's files by the verifier; nothing is
copied from what a file says about itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trainables.run_record import Digests
from trainables.schema import read_record

VERIFICATION_FILE = "verification.json"

ALTERED, DIVERGED, INCOMPLETE, NOT_COMPARABLE, IDENTICAL = (
    "altered",
    "diverged",
    "incomplete",
    "not_comparable",
    "identical",
)
GroupStatus = Literal["altered", "diverged", "incomplete", "not_comparable", "identical"]
SEVERITY: tuple[str, ...] = (ALTERED, DIVERGED, INCOMPLETE, NOT_COMPARABLE, IDENTICAL)
"""Group statuses, worst first."""

EXIT_PASS, EXIT_FAIL, EXIT_INCOMPLETE = 0, 1, 2
"""Exit codes: every check passed; something was altered or diverged; a file is missing or
unreadable (this wins: a proof with a missing piece is no proof)."""


@dataclass(frozen=True)
class MetricDifference:
    """One metric of one epoch in two runs: both values, ULPs apart, relative difference."""

    values: tuple[float, float]
    ulps: int | None
    rel_diff: float


@dataclass(frozen=True)
class Divergence:
    """The first epoch whose metrics differ in their bits (or where one history ends)."""

    epoch: int
    metrics: dict[str, MetricDifference]
    lengths: tuple[int, int] | None = None


@dataclass(frozen=True)
class TensorDifference:
    """One model tensor that differs between two runs, and by how much."""

    name: str
    shape: tuple[int, ...]
    n_differing: int
    max_abs_diff: float
    max_rel_diff: float


@dataclass(frozen=True)
class EnvironmentDifference:
    """One environment field two runs differ in; ``decisive``: it rules out bit equality."""

    field: str
    values: tuple[Any, Any]
    decisive: bool


@dataclass(frozen=True)
class Comparison:
    """Two runs compared bit for bit on their recomputed digests.

    Attributes:
        reference: The first run's label (a trial id, ``recorded``).
        trial: The second run's label.
        same: Per digest part (weights, optimizer, metrics), whether the bits agree.
        environment: The fields whose values differ between the two runs.
        not_comparable_because: When not identical: the decisive fields (and
            ``deterministic mode off``) that rule out bit equality; empty if none do.
        first_divergence: When the metrics differ: where they first do.
        metric_drift: When not identical: each metric's largest relative difference.
        differing_tensors: When the weights differ: which tensors, largest difference first.
    """

    reference: str
    trial: str
    identical: bool
    same: dict[str, bool]
    environment: tuple[EnvironmentDifference, ...] = ()
    not_comparable_because: tuple[str, ...] = ()
    first_divergence: Divergence | None = None
    metric_drift: dict[str, float] | None = None
    differing_tensors: tuple[TensorDifference, ...] = ()

    def environment_field(self, name: str) -> EnvironmentDifference | None:
        """The difference in field ``name``, if the runs differ in it."""
        return next((d for d in self.environment if d.field == name), None)


@dataclass(frozen=True)
class Alteration:
    """Files of a run (or of the sweep) that disagree with what was recorded of them.

    Attributes:
        files: The files that disagree, relative to the sweep folder.
        part: ``weights``, ``optimizer state``, ``metrics``, ``fingerprint`` (the record's
            digests disagree among themselves), ``config``, ``summary`` or ``best copy``.
        detail: What disagrees, in one sentence.
        tensors: For weights: the tensors whose bits are not the recorded ones.
        epochs: For metrics: the epochs whose values are not the recorded ones.
        optimizers: For optimizer state: the optimizers (0-based, in the run's order).
    """

    files: tuple[str, ...]
    part: str
    detail: str
    tensors: tuple[str, ...] = ()
    epochs: tuple[int, ...] = ()
    optimizers: tuple[int, ...] = ()


@dataclass(frozen=True)
class FileProblem:
    """A file the verification needs that is missing or unreadable."""

    path: str
    reason: str


@dataclass(frozen=True)
class Member:
    """One trial of a replicate group, as its files show it.

    Attributes:
        status: The trial's status in the sweep (``completed``, ``errored``, ...).
        digests: Recomputed from its ``model.pt`` and history (None: not readable).
        environment: What it ran on that bears on bit equality.
        altered: Where its files disagree with its record; such a run is not compared.
        problem: Why its files could not be read, naming the file.
    """

    trial_id: str
    replicate: int
    status: str
    run_json: str | None
    digests: Digests | None = None
    environment: dict[str, Any] | None = None
    altered: tuple[Alteration, ...] = ()
    problem: str | None = None

    @property
    def usable(self) -> bool:
        """Whether this run's files were read and agree with its record."""
        return self.digests is not None and not self.altered and self.problem is None


@dataclass(frozen=True)
class GroupVerdict:
    """Trials that differ only in their replicate index, and what comparing them showed.

    Attributes:
        histories: Per usable member, its loss curves (``epoch``, ``train_loss``,
            ``val_loss``).
        comparisons: Each usable member against the first usable one.
        loss_spread: When not identical: per epoch, max - min of each loss over the members.
    """

    status: GroupStatus
    params: dict[str, Any]
    seed: int
    deterministic: bool | None
    members: tuple[Member, ...]
    histories: dict[str, dict[str, tuple[float, ...]]]
    comparisons: tuple[Comparison, ...]
    loss_spread: dict[str, tuple[float, ...]] | None = None
    note: str | None = None


@dataclass(frozen=True)
class SealCheck:
    """The sweep folder against its ``SHA256SUMS`` manifest, file by file.

    Attributes:
        found: Whether the manifest exists and could be read.
        sha256: The manifest's own digest: publish it, and anyone can check the whole folder.
        n_sealed: Files the manifest lists.
        added: Files present but not sealed (not counting files that are never sealed).
        missing: Sealed files that are gone.
        changed: Sealed files whose bytes differ from their sealed digest.
        error: Why the manifest is missing or unreadable.
    """

    file: str
    found: bool
    sha256: str | None = None
    n_sealed: int = 0
    added: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    error: str | None = None

    @property
    def intact(self) -> bool:
        """Whether every sealed file is there, unchanged, and nothing was added."""
        return self.found and not (self.added or self.missing or self.changed)


@dataclass(frozen=True)
class Verification:
    """The verification of one sweep folder (``verification.json``).

    Attributes:
        seal: The folder against its manifest.
        groups: One verdict per replicate group.
        altered: Sweep-level files that disagree with the runs (``summary.json``, ``best/``).
        problems: Every file needed that is missing or unreadable.
        counts: Groups per status.
        verdict: ``PASS``, ``FAIL``, ``INCOMPLETE`` or ``INCONCLUSIVE``.
        exit_code: 0 (PASS, INCONCLUSIVE), 1 (FAIL) or 2 (INCOMPLETE).
    """

    FILE_NAME = VERIFICATION_FILE

    sweep: str
    checked_at: str
    metric: str
    seal: SealCheck
    groups: tuple[GroupVerdict, ...]
    altered: tuple[Alteration, ...]
    problems: tuple[FileProblem, ...]
    counts: dict[str, int]
    verdict: Literal["PASS", "FAIL", "INCOMPLETE", "INCONCLUSIVE"]
    exit_code: int

    @property
    def passed(self) -> bool:
        """Whether nothing was found altered, diverged, missing or unreadable."""
        return self.exit_code == EXIT_PASS

    @property
    def all_alterations(self) -> list[Alteration]:
        """The sweep-level alterations, then each member's."""
        return list(self.altered) + [a for g in self.groups for m in g.members for a in m.altered]


def load_verification(path: str | Path) -> Verification:
    """Read a ``verification.json``.

    Raises:
        ResultFileError: Missing, corrupt or not a verification (naming the file and key).
    """
    return read_record(Verification, path)
