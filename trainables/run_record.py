"""A finished run on disk: ``run.json`` (the record) and ``model.pt`` (weights and optimizers).

``run.json`` is written last, so a folder that holds it holds a complete run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.config import DataConfig
from trainables.constants import MODEL_FILE, RUN_FILE, RUN_SCHEMA_VERSION
from trainables.files import atomic_torch_save, atomic_write_json, load_torch, read_json
from trainables.schema import config_to_dict, flatten_dict

if TYPE_CHECKING:  # importing the loop would load torch and AnnData for readers of results
    from trainables.train import RunResult


def run_record(
    result: RunResult, data_config: DataConfig | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build the JSON-friendly record of a run.

    Args:
        result: What ``train()`` returned.
        data_config: The data config the run's data were prepared from, if known.
        extra: Further top-level entries (the sweeper adds trial id, replicate, node).

    Returns:
        The record written as ``run.json``.
    """
    return {
        "schema_version": RUN_SCHEMA_VERSION,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            "train": config_to_dict(result.train_config),
            "data": None if data_config is None else config_to_dict(data_config),
        },
        "seeding": result.seeding,
        "environment": result.environment,
        "data": result.data,
        "model": result.model_info,
        "history": result.history,
        "fingerprint": result.fingerprint,
        "integration": result.integration,
        "timing": result.timing,
        **(extra or {}),
    }


def write_run(
    result: RunResult,
    out_dir: str | Path,
    data_config: DataConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.pt`` then ``run.json`` into ``out_dir``, each atomically; return run.json."""
    out = Path(out_dir)
    record = run_record(result, data_config, extra)
    atomic_torch_save(
        {
            "model": result.model_state,
            "optimizers": result.optimizer_states,
            "config": record["config"],
            "data": {
                "genes": result.data.get("genes"),
                "categories": result.data.get("categories"),
            },
        },
        out / MODEL_FILE,
    )
    return atomic_write_json(out / RUN_FILE, record)


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Read a run's ``run.json``.

    Raises:
        ResultFileError: The file is missing or corrupt (the message names it).
    """
    return read_json(Path(run_dir) / RUN_FILE)


def load_model_file(run_dir: str | Path) -> dict[str, Any]:
    """Read a run's ``model.pt`` (state dicts on the CPU).

    Raises:
        ResultFileError: The file is missing or corrupt (the message names it).
    """
    return load_torch(Path(run_dir) / MODEL_FILE)


def flat_run_config(record: dict[str, Any]) -> dict[str, Any]:
    """Flatten a run record (or one holding only ``config`` and ``environment``) into tracker keys.

    Layout: ``data_*`` (data config), ``train_*`` (schedule, seed, determinism), ``model/*``
    (architecture and parameter counts), ``optimizer/*``, ``seeding/*``, ``git/*``,
    ``system/*`` and ``packages/*``.
    """
    train = dict(record["config"]["train"])
    model, optimizer = train.pop("model"), train.pop("optimizer")
    optimizer["learning_rate"] = train.pop("learning_rate")
    flat = {f"data_{k}": v for k, v in flatten_dict(record["config"]["data"] or {}, "_").items()}
    flat |= {f"train_{k}": v for k, v in train.items()}
    flat |= {f"model/{k}": v for k, v in model.items()}
    flat |= {
        f"model/{k}": v for k, v in record.get("model", {}).items() if k.startswith("n_params")
    }
    flat |= {f"optimizer/{k}": v for k, v in optimizer.items()}
    flat |= {f"seeding/{k}": v for k, v in record.get("seeding", {}).items()}
    for section in ("git", "system", "packages"):
        flat |= {f"{section}/{k}": v for k, v in record["environment"][section].items()}
    return flat


def final_result(record: dict[str, Any]) -> dict[str, Any]:
    """A run's last epoch metrics with its integration scores: what its trial last reported."""
    last = record["history"][-1] if record["history"] else {}
    return {**last, **(record.get("integration") or {})}


def run_environment(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a run's environment that bear on bit equality."""
    system = record["environment"]["system"]
    node = record.get("trial", {}).get("node") or {}
    return {
        "hostname": system.get("hostname"),
        "node_id": node.get("node_id"),
        "device": str(record["model"].get("device", "")).split(":")[0],
        "gpu": (system.get("gpu_names") or [None])[0],
        "cuda": system.get("cuda_version"),
        "cudnn": system.get("cudnn_version"),
        "torch": system.get("torch_version"),
        "cpu_threads": record["seeding"].get("cpu_threads"),
        "deterministic": record["seeding"].get("deterministic"),
        "cpu": system.get("processor"),
        "numpy": record["environment"]["packages"].get("numpy"),
    }
