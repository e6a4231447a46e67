"""The one comparison of two runs, and the one environment difference.

``invae-verify`` and ``invae-audit`` compare replicates with :func:`compare_runs`;
``invae-reproduce`` compares a recorded run with its rerun with it too. Both compare digests
recomputed from the runs' files, never the digests a record claims.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sweeper.verify.evidence import RunEvidence
from sweeper.verify.records import (
    Comparison,
    Divergence,
    EnvironmentDifference,
    MetricDifference,
    TensorDifference,
)
from trainables.constants import METRIC_KEYS
from trainables.run_record import Fingerprint, RunRecord

GPU_FIELDS = ("gpu", "gpu_sm_count", "gpu_capability", "nvidia_driver", "cuda", "cudnn", "cublas")
KERNEL_FIELDS = {
    # Fields that pick a run's kernels or inputs; runs that differ in one are not comparable
    # bit for bit. cuBLAS promises equal bits only for one CUDA version, GPU architecture and
    # SM count; the driver's JIT compiles PTX; Triton writes the compiled loss's kernels.
    "cpu": ("device", "torch", "cpu_capability", "cpu_threads", "mkl_cbwr", "git_commit", "data"),
    "cuda": ("device", "torch", "triton", *GPU_FIELDS, "git_commit", "data"),
}
KERNEL_PACKAGES = ("torch", "pytorch", "triton")
"""Distributions whose versions are kernel fields (``torch``, ``triton``), not package rows."""
SHOWN_FIELDS = ("hostname", "node_id", "processor", "python", "numpy")
"""Fields shown beside the kernel fields: they explain, but do not decide, a difference."""


def bit_environment(record: RunRecord) -> dict[str, Any]:
    """What a run ran on that bears on its bits, flat (GPU fields None for a CPU run).

    ``data`` is the digest of the prepared arrays the run trained on; ``git_commit`` the code.
    """
    system, git = record.environment.system, record.environment.git
    on_gpu = record.device_type == "cuda"

    def first(values: Sequence[Any]) -> Any:  # the first visible device: the one trained on
        return values[0] if on_gpu and values else None

    node = record.trial.node if record.trial else {}
    return {
        "hostname": system.hostname,
        "node_id": node.get("node_id"),
        "device": record.device_type,
        "gpu": first(system.gpu_names),
        "gpu_sm_count": first(system.gpu_sm_counts),
        "gpu_capability": first(system.gpu_capabilities),
        "nvidia_driver": system.nvidia_driver if on_gpu else None,
        "cuda": system.cuda_version if on_gpu else None,
        "cudnn": system.cudnn_version if on_gpu else None,
        "cublas": system.cublas_version if on_gpu else None,
        "torch": system.torch_version,
        "triton": system.triton_version if on_gpu else None,
        "cpu_capability": system.cpu_capability,
        "cpu_threads": record.seeding.cpu_threads,
        "mkl_cbwr": record.seeding.mkl_cbwr if not on_gpu else None,  # MKL's reproducible mode
        "deterministic": record.seeding.deterministic,
        "git_commit": git.commit,
        "data": (record.data.get("source") or {}).get("prepared_sha256"),
        "processor": system.processor,
        "python": system.python_version,
        "numpy": record.environment.packages.get("numpy"),
    }


def environment_difference(a: RunRecord, b: RunRecord) -> tuple[EnvironmentDifference, ...]:
    """Every field in which two runs' environments differ, kernel-deciding ones marked.

    The kernel fields depend on where the runs trained (``KERNEL_FIELDS``); a field either run
    did not record (None: written by an older version, or not determinable) cannot rule out
    equality and is shown, not decisive. Package versions other than torch's and Triton's
    (which are kernel fields) follow as ``packages/<name>`` rows, and the git state as
    ``git/branch`` and ``git/is_dirty``.
    """
    env_a, env_b = bit_environment(a), bit_environment(b)
    device = env_a["device"] if env_a["device"] == env_b["device"] else None
    decisive = set(KERNEL_FIELDS.get(device, ("device",)))
    rows = []
    for field, value_a in env_a.items():
        value_b = env_b[field]
        if value_a != value_b:
            known = value_a is not None and value_b is not None
            rows.append(
                EnvironmentDifference(field, (value_a, value_b), field in decisive and known)
            )
    git_a, git_b = a.environment.git, b.environment.git
    for field in ("branch", "is_dirty"):
        if getattr(git_a, field) != getattr(git_b, field):
            rows.append(EnvironmentDifference(f"git/{field}", _pair(git_a, git_b, field), False))
    packages_a, packages_b = a.environment.packages, b.environment.packages
    for name in sorted(set(packages_a) | set(packages_b)):
        if packages_a.get(name) != packages_b.get(name) and name not in KERNEL_PACKAGES:
            pair = (packages_a.get(name), packages_b.get(name))
            rows.append(EnvironmentDifference(f"packages/{name}", pair, False))
    return tuple(rows)


def compare_runs(reference: RunEvidence, other: RunEvidence) -> Comparison:
    """Compare two runs bit for bit, on the digests recomputed from their files.

    Returns:
        The comparison. When the runs differ: the first epoch whose metrics differ, each
        metric's drift and the differing tensors (sized from the weights), and which differing
        environment fields (if any) rule out bit equality.
    """
    label_a, record_a, print_a, state_a = _parts(reference)
    label_b, record_b, print_b, state_b = _parts(other)
    same = print_a.digests.same(print_b.digests)
    environment = environment_difference(record_a, record_b)
    identical = all(same.values())
    if identical:
        return Comparison(label_a, label_b, True, same, environment)
    reasons = [d.field for d in environment if d.decisive]
    if not (record_a.seeding.deterministic and record_b.seeding.deterministic):
        reasons.append("deterministic mode off")
    names = [n for n, d in print_a.parameters.items() if print_b.parameters.get(n) != d]
    names += [n for n in print_b.parameters if n not in print_a.parameters]
    return Comparison(
        reference=label_a,
        trial=label_b,
        identical=False,
        same=same,
        environment=environment,
        not_comparable_because=tuple(reasons),
        first_divergence=first_divergence(record_a.history, record_b.history),
        metric_drift=metric_drift(record_a.history, record_b.history),
        differing_tensors=tensor_differences(state_a, state_b, names),
    )


def first_divergence(
    hist_a: Sequence[Mapping[str, float]], hist_b: Sequence[Mapping[str, float]]
) -> Divergence | None:
    """The first epoch whose metric bits differ: which metrics, both values, ULPs, rel. diff."""
    for row_a, row_b in zip(hist_a, hist_b, strict=False):
        differing = [k for k in METRIC_KEYS if _bits(row_a[k]) != _bits(row_b[k])]
        if differing:
            return Divergence(
                epoch=int(row_a["epoch"]),
                metrics={
                    k: MetricDifference(
                        (float(row_a[k]), float(row_b[k])),
                        ulp_distance(row_a[k], row_b[k]),
                        _rel(row_a[k], row_b[k]),
                    )
                    for k in differing
                },
            )
    if len(hist_a) != len(hist_b):
        return Divergence(min(len(hist_a), len(hist_b)) + 1, {}, (len(hist_a), len(hist_b)))
    return None


def metric_drift(
    hist_a: Sequence[Mapping[str, float]], hist_b: Sequence[Mapping[str, float]]
) -> dict[str, float]:
    """Largest relative difference of each metric over all epochs (tolerance figures)."""
    return {
        k: max((_rel(ra[k], rb[k]) for ra, rb in zip(hist_a, hist_b, strict=False)), default=0.0)
        for k in METRIC_KEYS
        if k != "epoch"
    }


def loss_spread(curves: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, tuple[float, ...]]:
    """Per epoch, max - min of each loss across runs' curves (how far replicates drift)."""
    n_epochs = min(len(c["epoch"]) for c in curves)
    spread = {"epoch": tuple(curves[0]["epoch"][:n_epochs])}
    for key in ("train_loss", "val_loss"):
        values = np.array([c[key][:n_epochs] for c in curves])  # (n_runs, n_epochs)
        spread[key] = tuple((values.max(axis=0) - values.min(axis=0)).tolist())
    return spread


def tensor_differences(
    state_a: Mapping[str, Any], state_b: Mapping[str, Any], names: Sequence[str]
) -> tuple[TensorDifference, ...]:
    """Max absolute and relative difference of each named tensor, largest first.

    A tensor present in one state only, or of another shape, counts every element as
    differing, with an infinite difference.
    """
    rows = []
    for name in names:
        if name not in state_a or name not in state_b:
            shape = tuple((state_a.get(name) if name in state_a else state_b[name]).shape)
            rows.append(TensorDifference(name, shape, math.prod(shape), math.inf, math.inf))
            continue
        x = state_a[name].double().numpy()
        y = state_b[name].double().numpy()
        if x.shape != y.shape:
            rows.append(TensorDifference(name, x.shape, x.size, math.inf, math.inf))
            continue
        diff = np.abs(x - y)
        scale = np.maximum(np.abs(x), np.abs(y))
        rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
        differing = (x != y) & ~(np.isnan(x) & np.isnan(y))
        rows.append(
            TensorDifference(
                name=name,
                shape=tuple(x.shape),
                n_differing=int(np.count_nonzero(differing)),
                max_abs_diff=float(np.nanmax(diff, initial=0.0)),
                max_rel_diff=float(np.nanmax(rel, initial=0.0)),
            )
        )
    return tuple(sorted(rows, key=lambda r: -r.max_abs_diff))


def ulp_distance(x: float, y: float) -> int | None:
    """Units in the last place between two doubles (None when either is not finite)."""
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    return abs(_ordered(x) - _ordered(y))


def _parts(run: RunEvidence) -> tuple[str, RunRecord, Fingerprint, Mapping[str, Any]]:
    return run.label, run.record, run.recomputed, run.model_state


def _pair(a: Any, b: Any, field: str) -> tuple[Any, Any]:
    return getattr(a, field), getattr(b, field)


def _bits(value: float) -> bytes:
    return struct.pack("<d", float(value))


def _ordered(value: float) -> int:
    """Map a double to an integer so that adjacent doubles map to adjacent integers."""
    (bits,) = struct.unpack("<q", struct.pack("<d", value))
    return bits if bits >= 0 else -(bits & 0x7FFFFFFFFFFFFFFF)


def _rel(x: float, y: float) -> float:
    if x == y:
        return 0.0
    if not (math.isfinite(x) and math.isfinite(y)):
        return math.inf
    return abs(x - y) / max(abs(x), abs(y))
