"""Replicate verification over a sweep's results on disk. No Ray.

Trials that share (hyperparameters, seed, deterministic) and differ only in their replicate index
form a group. A group is ``identical`` when every member's weights, optimizer states and
per-epoch metrics have the same bits; otherwise ``diverged``, with the first epoch and metric that
differ, the parameter tensors that differ (and by how much) and the environment differences that
may explain it. Groups whose environments rule out bit equality (CPU vs GPU, GPU model, CUDA or
torch version, non-deterministic mode) are ``not_comparable`` and get tolerance figures instead;
groups with a member that did not complete are ``incomplete``.
"""

from __future__ import annotations

import json
import math
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.results import COMPLETED, load_summary
from trainables.constants import METRIC_KEYS, TUNE_REPLICATE
from trainables.files import read_json
from trainables.run_record import load_model_file, run_environment

IDENTICAL, DIVERGED, NOT_COMPARABLE, INCOMPLETE = (
    "identical",
    "diverged",
    "not_comparable",
    "incomplete",
)
VERIFICATION_FILE = "verification.json"

# Environment fields that rule out bit equality when they differ, and fields worth showing.
DECISIVE = ("device", "gpu", "cuda", "torch", "deterministic")
SHOWN = (
    "hostname",
    "node_id",
    "device",
    "gpu",
    "cuda",
    "cudnn",
    "torch",
    "cpu_threads",
    "deterministic",
    "cpu",
    "numpy",
)


def verify_sweep(folder: str | Path) -> dict[str, Any]:
    """Verify every replicate group of a finished sweep.

    Args:
        folder: The sweep folder (holding ``summary.json`` and the trials' ``run.json``).

    Returns:
        The verification: per group ``status``, members, first divergence, differing tensors
        and environment differences; plus counts and ``passed``.

    Raises:
        ResultFileError: ``summary.json``, a ``run.json`` or a needed ``model.pt`` is missing
            or corrupt (the message names the file).
    """
    folder = Path(folder)
    summary = load_summary(folder)
    groups: dict[str, list[dict[str, Any]]] = {}
    for trial in summary["trials"]:
        record = read_json(folder / trial["run_json"]) if trial["run_json"] else None
        deterministic = record["seeding"]["deterministic"] if record else None
        key = json.dumps([trial["params"], trial["seed"], deterministic], sort_keys=True)
        groups.setdefault(key, []).append({**trial, "record": record})
    results = [verify_group(folder, members) for members in groups.values()]
    counts = {
        s: sum(g["status"] == s for g in results)
        for s in (IDENTICAL, DIVERGED, NOT_COMPARABLE, INCOMPLETE)
    }
    return {
        "sweep": str(folder),
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metric": summary.get("metric"),
        "counts": counts,
        "passed": counts[DIVERGED] == 0,
        "groups": results,
    }


def verify_group(folder: Path, members: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare every completed member of one replicate group with its first member."""
    members = sorted(members, key=lambda m: m[TUNE_REPLICATE])
    done = [m for m in members if m["status"] == COMPLETED and m["record"] is not None]
    base = {
        "params": members[0]["params"],
        "seed": members[0]["seed"],
        "deterministic": done[0]["record"]["seeding"]["deterministic"] if done else None,
        "members": [_member(m) for m in members],
        "histories": {m["trial_id"]: _curve(m["record"]) for m in done},
    }
    base["comparisons"] = [compare_runs(folder, done[0], other) for other in done[1:]]
    outcomes = {
        IDENTICAL if c["identical"] else NOT_COMPARABLE if c["not_comparable_because"] else DIVERGED
        for c in base["comparisons"]
    }
    if len(done) < len(members) or len(done) < 2:
        status = INCOMPLETE
    else:  # one diverged comparison fails the group, whatever else differs
        status = next(s for s in (DIVERGED, NOT_COMPARABLE, IDENTICAL) if s in outcomes)
    if status != IDENTICAL and len(done) >= 2:
        base["loss_spread"] = loss_spread(base["histories"])
    if status == IDENTICAL and base["deterministic"] is False:
        base["note"] = "identical, although deterministic mode was off"
    return {"status": status, **base}


def compare_runs(folder: Path, ref: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Compare two completed runs bit for bit; locate and size any difference."""
    a, b = ref["record"], other["record"]
    fa, fb = a["fingerprint"], b["fingerprint"]
    same = {k: fa[k] == fb[k] for k in ("weights", "optimizer", "metrics")}
    env_a, env_b = run_environment(a), run_environment(b)
    env_diff = {k: [env_a.get(k), env_b.get(k)] for k in SHOWN if env_a.get(k) != env_b.get(k)}
    reasons = [k for k in DECISIVE if k in env_diff]
    if not (a["seeding"]["deterministic"] and b["seeding"]["deterministic"]):
        reasons.append("deterministic mode off")
    comparison = {
        "reference": ref["trial_id"],
        "trial": other["trial_id"],
        "identical": all(same.values()),
        "same": same,
        "environment_diff": env_diff,
        "not_comparable_because": reasons if not all(same.values()) else [],
    }
    if comparison["identical"]:
        return comparison
    comparison["first_divergence"] = first_divergence(a["history"], b["history"])
    comparison["metric_drift"] = metric_drift(a["history"], b["history"])
    names = [n for n in fa["parameters"] if fa["parameters"][n] != fb["parameters"].get(n)]
    comparison["differing_tensors"] = tensor_differences(
        folder / ref["run_json"], folder / other["run_json"], names
    )
    return comparison


def first_divergence(hist_a: list[dict], hist_b: list[dict]) -> dict[str, Any] | None:
    """The first epoch whose metric bits differ: which metrics, both values, ULPs and rel. diff."""
    for row_a, row_b in zip(hist_a, hist_b, strict=False):
        differing = [k for k in METRIC_KEYS if _bits(row_a[k]) != _bits(row_b[k])]
        if differing:
            return {
                "epoch": row_a["epoch"],
                "metrics": {
                    k: {
                        "values": [row_a[k], row_b[k]],
                        "ulps": ulp_distance(row_a[k], row_b[k]),
                        "rel_diff": _rel(row_a[k], row_b[k]),
                    }
                    for k in differing
                },
            }
    if len(hist_a) != len(hist_b):
        return {
            "epoch": min(len(hist_a), len(hist_b)) + 1,
            "metrics": {},
            "lengths": [len(hist_a), len(hist_b)],
        }
    return None


def loss_spread(histories: dict[str, dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per epoch, max - min of each loss across the members (how far replicates drift)."""
    curves = list(histories.values())
    n_epochs = min(len(c["epoch"]) for c in curves)
    spread = {"epoch": curves[0]["epoch"][:n_epochs]}
    for key in ("train_loss", "val_loss"):
        values = np.array([c[key][:n_epochs] for c in curves])  # (n_members, n_epochs)
        spread[key] = (values.max(axis=0) - values.min(axis=0)).tolist()
    return spread


def metric_drift(hist_a: list[dict], hist_b: list[dict]) -> dict[str, float]:
    """Largest relative difference of each metric over all epochs (tolerance figures)."""
    return {
        k: max((_rel(ra[k], rb[k]) for ra, rb in zip(hist_a, hist_b, strict=False)), default=0.0)
        for k in METRIC_KEYS
        if k != "epoch"
    }


def tensor_differences(run_a: Path, run_b: Path, names: list[str]) -> list[dict[str, Any]]:
    """Max absolute and relative difference of each named tensor, from the saved weights."""
    if not names:
        return []
    state_a = load_model_file(run_a.parent)["model"]
    state_b = load_model_file(run_b.parent)["model"]
    rows = []
    for name in names:
        x = state_a[name].double().numpy()
        y = state_b[name].double().numpy()
        diff = np.abs(x - y)
        scale = np.maximum(np.abs(x), np.abs(y))
        rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
        rows.append(
            {
                "name": name,
                "shape": list(x.shape),
                "n_differing": int(np.count_nonzero(diff)),
                "max_abs_diff": float(diff.max(initial=0.0)),
                "max_rel_diff": float(rel.max(initial=0.0)),
            }
        )
    return sorted(rows, key=lambda r: -r["max_abs_diff"])


def ulp_distance(x: float, y: float) -> int | None:
    """Units in the last place between two doubles (None when either is not finite)."""
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    return abs(_ordered(x) - _ordered(y))


def write_verification(
    folder: str | Path, verification: dict[str, Any], out: str | Path | None = None
) -> Path:
    """Write ``verification.json`` (atomically) into the sweep folder, or to ``out``."""
    from trainables.files import atomic_write_json

    return atomic_write_json(Path(out) if out else Path(folder) / VERIFICATION_FILE, verification)


def _member(trial: dict[str, Any]) -> dict[str, Any]:
    record = trial["record"]
    return {
        "trial_id": trial["trial_id"],
        TUNE_REPLICATE: trial[TUNE_REPLICATE],
        "status": trial["status"],
        "run_json": trial["run_json"],
        "fingerprint": trial["fingerprint"],
        "environment": run_environment(record) if record else None,
    }


def _curve(record: dict[str, Any]) -> dict[str, list[float]]:
    return {k: [row[k] for row in record["history"]] for k in ("epoch", "train_loss", "val_loss")}


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
