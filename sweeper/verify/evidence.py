"""One run as its files show it: read once, its fingerprint recomputed, checked against itself.

A run's ``run.json`` records a fingerprint; its ``model.pt`` holds the weights and optimizer
states, and its ``run.json`` the metric history, that the fingerprint was computed from. Here
the weights and optimizer digests are recomputed from ``model.pt`` and the metrics digest from
the history, exactly as training computed them (``trainables.fingerprint``). Where they differ
from the record, the run is *altered*: its files no longer say the same thing, so it proves
nothing either way and is not compared with its replicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeper.verify.records import Alteration
from sweeper.verify.seal import FolderReader
from trainables.constants import MODEL_FILE, RUN_FILE
from trainables.files import ResultFileError, load_torch
from trainables.run_record import Fingerprint, RunRecord
from trainables.schema import config_to_dict, flatten_dict, parse_record


@dataclass(frozen=True)
class RunEvidence:
    """A run read from its files.

    Attributes:
        label: How reports name the run (a trial id, ``recorded``, ``rerun``).
        record: Its ``run.json``.
        recomputed: The fingerprint recomputed from ``model.pt`` and the history.
        model_state: The weights ``model.pt`` holds (to size differences with other runs).
        altered: Where its files disagree with its record.
    """

    label: str
    record: RunRecord
    recomputed: Fingerprint
    model_state: dict[str, Any]
    altered: tuple[Alteration, ...]


def read_evidence(reader: FolderReader, run_dir: str, label: str) -> RunEvidence:
    """Read one run's ``run.json`` and ``model.pt`` (each once) and recompute its fingerprint.

    Args:
        reader: Reads the folder holding the run, keeping each file's SHA-256.
        run_dir: The run's folder relative to the reader's folder ("" for the folder itself).
        label: How reports name the run.

    Raises:
        ResultFileError: A file is missing, unreadable or not of its kind (naming it).
    """
    from trainables.fingerprint import fingerprint  # torch: only where weights are read

    run_json, model_pt = (
        f"{run_dir}/{name}" if run_dir else name for name in (RUN_FILE, MODEL_FILE)
    )
    record = parse_record(RunRecord, reader.read(run_json), f"{reader.folder}/{run_json}")
    model_file = _read_model_file(reader, model_pt)
    recomputed = fingerprint(model_file["model"], model_file["optimizers"], record.history)
    altered = alterations(record, model_file, recomputed, run_json, model_pt)
    return RunEvidence(label, record, recomputed, model_file["model"], altered)


def alterations(
    record: RunRecord,
    model_file: dict[str, Any],
    recomputed: Fingerprint,
    run_json: str,
    model_pt: str,
) -> tuple[Alteration, ...]:
    """Where a run's files disagree with its record: weights, optimizers, metrics, config."""
    stored = record.fingerprint
    found = []
    tensors = _differing(recomputed.parameters, stored.parameters)
    if recomputed.weights != stored.weights and tensors:
        found.append(
            Alteration(
                (model_pt, run_json),
                "weights",
                f"{len(tensors)} of {len(recomputed.parameters)} tensors of {MODEL_FILE} do not "
                f"have the bits {RUN_FILE} records",
                tensors=tensors,
            )
        )
    elif recomputed.weights != stored.weights or tensors:
        which = "weights digest" if not tensors else f"digests of {len(tensors)} tensors"
        found.append(
            Alteration(
                (run_json,),
                "fingerprint",
                f"the recorded {which} disagree with the rest of the record, which matches "
                f"{MODEL_FILE}: the recorded fingerprint was changed",
                tensors=tensors,
            )
        )
    optimizers = tuple(
        i
        for i, digest in enumerate(recomputed.optimizers)
        if stored.optimizers and (i >= len(stored.optimizers) or stored.optimizers[i] != digest)
    )
    if recomputed.optimizer != stored.optimizer or optimizers:
        part = "optimizer state" if recomputed.optimizer != stored.optimizer else "fingerprint"
        detail = f"the optimizer states of {MODEL_FILE} do not have the bits {RUN_FILE} records"
        if len(recomputed.optimizers) != len(stored.optimizers) and stored.optimizers:
            detail += (
                f" ({len(recomputed.optimizers)} optimizers, {len(stored.optimizers)} recorded)"
            )
        found.append(Alteration((model_pt, run_json), part, detail, optimizers=optimizers))
    epochs = tuple(
        int(record.history[i]["epoch"])
        for i, digest in enumerate(recomputed.epochs)
        if stored.epochs and (i >= len(stored.epochs) or stored.epochs[i] != digest)
    )
    if recomputed.metrics != stored.metrics or epochs:
        part = "metrics" if recomputed.metrics != stored.metrics else "fingerprint"
        detail = f"the history in {RUN_FILE} is not the one its metrics digest was computed from"
        if stored.epochs and len(stored.epochs) != len(record.history):
            detail += f" ({len(record.history)} epochs, {len(stored.epochs)} recorded)"
        found.append(Alteration((run_json,), part, detail, epochs=epochs))
    config_keys = _differing(
        flatten_dict(model_file["config"] or {}), flatten_dict(config_to_dict(record.config))
    )
    if config_keys:
        found.append(
            Alteration(
                (model_pt, run_json),
                "config",
                f"{MODEL_FILE} was saved with another config than {RUN_FILE} records: "
                + ", ".join(config_keys[:5])
                + (" ..." if len(config_keys) > 5 else ""),
            )
        )
    return tuple(found)


def _differing(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, ...]:
    """Keys whose values differ between two mappings (present in only one counts)."""
    return tuple(sorted(k for k in set(a) | set(b) if a.get(k, _ABSENT) != b.get(k, _ABSENT)))


_ABSENT = object()


def _read_model_file(reader: FolderReader, model_pt: str) -> dict[str, Any]:
    payload = reader.read(model_pt)
    where = f"{reader.folder}/{model_pt}"
    model_file = load_torch(where, payload=payload)
    shape_ok = (
        isinstance(model_file, dict)
        and isinstance(model_file.get("model"), dict)
        and isinstance(model_file.get("optimizers"), list | tuple)
    )
    if not shape_ok:
        raise ResultFileError(where, "not a model file (no 'model' state and 'optimizers' list)")
    return model_file
