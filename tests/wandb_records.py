"""Read an offline W&B run back from its ``run-<id>.wandb`` file, as ``wandb sync`` would send it.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic ``0xBEE1``, version 0),
then LevelDB-log-style 32 KiB blocks of chunks (4-byte CRC, 2-byte length, 1-byte type: full,
first, middle, last), each record a ``wandb_internal_pb2.Record``. wandb >= 0.20 no longer
ships a Python reader (its sync moved into the Go core), hence these few lines here.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What an offline run holds once every record is applied in order."""

    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: set[str] = field(default_factory=set)
    exit_code: int | None = None


def records(path: Path):
    """Every record of a ``.wandb`` file, parsed."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # zeros: the rest of the block is empty
            pos += left
            continue
        if pos + HEADER + length > len(data):  # still being written
            return
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(folder: Path, wait_s: float = 30.0) -> OfflineRun:
    """Apply every record of the run folder's ``.wandb`` file in order.

    ``run.finish()`` returns before W&B's service process has written all of a run's records
    (seen under load), so this waits up to ``wait_s`` for the run's exit record.
    """
    deadline = time.monotonic() + wait_s
    while True:
        paths = list(Path(folder).glob("run-*.wandb"))
        found = [r for r in records(paths[0])] if paths else []
        if any(r.WhichOneof("record_type") == "exit" for r in found):
            break
        assert time.monotonic() < deadline, f"{folder}: no complete W&B run after {wait_s} s"
        time.sleep(0.2)
    run = OfflineRun()
    for record in found:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.project = record.run.run_id, record.run.project
            run.group, run.job_type = record.run.run_group, record.run.job_type
            run.tags = list(record.run.tags)
            _apply(run.config, record.run.config)
        elif kind == "config":
            _apply(run.config, record.config)
        elif kind == "summary":
            _apply(run.summary, record.summary)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "files":
            run.files |= {f.path for f in record.files.files}
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def _apply(target: dict[str, Any], update_record) -> None:
    for item in update_record.update:
        target[_key(item)] = json.loads(item.value_json)
    for item in update_record.remove:
        target.pop(_key(item), None)


def offline_runs(wandb_dir: Path) -> dict[str, OfflineRun]:
    """Every offline run under a ``wandb/`` folder, by run id."""
    runs = (read_offline_run(f) for f in sorted(Path(wandb_dir).glob("offline-run-*")))
    return {run.run_id: run for run in runs}


LAYOUT_KEYS = (
    "data_n_top_genes",
    "data_simulation_n_cells",
    "train_seed",
    "train_deterministic",
    "train_n_epochs",
    "model/z_i_dim",
    "model/hidden",
    "model/n_params",
    "model/device",
    "optimizer/type",
    "optimizer/muon_params",
    "optimizer/adamw_params",
    "optimizer/learning_rate",
    "seeding/seed",
    "seeding/deterministic",
    "seeding/cudnn_deterministic",
    "seeding/cudnn_benchmark",
    "seeding/matmul_allow_tf32",
    "seeding/cpu_threads",
    "git/commit",
    "git/is_dirty",
    "system/torch_version",
    "system/pytorch_version",
    "system/cuda_version",
    "packages/torch",
    "packages/pytorch",
    "packages/numpy",
)
"""Keys of every group of the one W&B layout (``trainables.wandb_run``), in every run."""


def check_layout(run: OfflineRun, record: dict[str, Any], wrote_run_json: bool = True) -> None:
    """Assert that an offline run holds the layout, model metadata and summary of its record.

    Args:
        wrote_run_json: The run was written (its summary names its ``run.json``, its files hold
            it, and the record names the W&B run); False for ``train(use_wandb=True)``.
    """
    missing = [k for k in LAYOUT_KEYS if k not in run.config]
    assert not missing, f"run {run.run_id}: config lacks {missing}"
    config, model = run.config, record["model"]
    assert config["train_seed"] == record["config"]["train"]["seed"]
    assert config["seeding/deterministic"] is record["seeding"]["deterministic"] is True
    assert config["seeding/cudnn_benchmark"] is False
    assert config["model/n_params"] == model["n_params"]
    assert config["optimizer/type"] == "Muon+AdamW"
    per_optimizer = model["n_params_per_optimizer"]
    assert config["optimizer/muon_params"] == per_optimizer["Muon"] > 0
    assert config["optimizer/adamw_params"] == per_optimizer["AdamW"] > 0
    assert config["optimizer/muon_params"] + config["optimizer/adamw_params"] == model["n_params"]
    assert config["packages/pytorch"] == config["packages/torch"]
    assert config["git/commit"] == record["environment"]["git"]["commit"]
    assert not [k for k in config if k in ("train", "data", "config", "run_config")]
    for part in ("weights", "optimizer", "metrics"):
        assert run.summary[f"fingerprint/{part}"] == record["fingerprint"][part]
    final = {**record["history"][-1], **(record["integration"] or {})}
    assert {k: run.summary[k] for k in final} == final
    assert len(run.history) == record["config"]["train"]["n_epochs"]
    assert run.exit_code == 0
    if not wrote_run_json:
        return
    assert run.summary["run_json"].endswith("run.json")
    assert "run.json" in run.files
    assert record["wandb"]["run_id"] == run.run_id
    assert record["wandb"]["mode"] == "offline"
    assert (run.group or None) == record["wandb"]["group"]
