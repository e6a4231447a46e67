"""Rerun a recorded run and prove it gives the same bits: ``invae-reproduce RUN_DIR``.

Automates "reproducing a run": compare the recorded environment with this one (git commit and
dirty flag, packages, torch, CUDA, cuDNN, GPU), rerun the same config and seed, and compare the
fingerprints; when they differ, say where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.analysis import first_divergence, tensor_differences
from trainables.config import DataConfig, TrainConfig
from trainables.provenance import get_environment_info
from trainables.run_record import load_run
from trainables.schema import ConfigError, config_from_dict
from trainables.standalone import run_standalone

SYSTEM_FIELDS = ("torch_version", "cuda_version", "cudnn_version", "gpu_names", "platform")


def environment_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[dict]:
    """Rows ``{field, recorded, current}`` for every provenance field that differs."""
    rows = []
    for field in ("commit", "is_dirty", "branch"):
        a, b = recorded["git"].get(field), current["git"].get(field)
        if a != b:
            rows.append({"field": f"git/{field}", "recorded": a, "current": b})
    for field in SYSTEM_FIELDS:
        a, b = recorded["system"].get(field), current["system"].get(field)
        if a != b:
            rows.append({"field": f"system/{field}", "recorded": a, "current": b})
    for name in sorted(set(recorded["packages"]) | set(current["packages"])):
        a, b = recorded["packages"].get(name), current["packages"].get(name)
        if a != b:
            rows.append({"field": f"packages/{name}", "recorded": a, "current": b})
    return rows


def reproduce_run(run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Rerun a recorded run into ``out_dir`` and compare it with the original.

    Args:
        run_dir: A folder holding ``run.json`` (and ``model.pt``).
        out_dir: Where the rerun's ``run.json`` and ``model.pt`` go.

    Returns:
        ``{"identical", "same", "environment_differences", "first_divergence",
        "differing_tensors", "rerun"}``.

    Raises:
        ResultFileError: ``run.json`` (or, to size a difference, ``model.pt``) is missing or
            corrupt.
        ConfigError: The recorded config is not usable (e.g. it has no data config).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    record = load_run(run_dir)
    source = str(run_dir / "run.json")
    if record["config"].get("data") is None:
        raise ConfigError("config.data", "the run recorded no data config to rerun with", source)
    train_cfg = config_from_dict(TrainConfig, record["config"]["train"], source=source)
    data_cfg = config_from_dict(DataConfig, record["config"]["data"], source=source)
    differences = environment_differences(record["environment"], get_environment_info())
    rerun = run_standalone(train_cfg, data_cfg, out_dir)
    old, new = record["fingerprint"], rerun.fingerprint
    same = {k: old[k] == new[k] for k in ("weights", "optimizer", "metrics")}
    names = [n for n in old["parameters"] if old["parameters"][n] != new["parameters"].get(n)]
    return {
        "identical": all(same.values()),
        "same": same,
        "environment_differences": differences,
        "first_divergence": first_divergence(record["history"], rerun.history),
        "differing_tensors": tensor_differences(run_dir / "run.json", out_dir / "run.json", names),
        "rerun": str(out_dir),
    }
