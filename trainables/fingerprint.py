"""Canonical SHA-256 hashes of a run: weights, optimizer states and metric history.

Two runs are bit-for-bit identical exactly when their fingerprints are equal. Hashes cover
dtype, shape and raw bytes of every tensor, and the IEEE-754 bit pattern of every metric, so
``-0.0`` and ``0.0`` differ and two NaNs with one payload compare equal.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from trainables.constants import METRIC_KEYS


def fingerprint(
    model_state: Mapping[str, torch.Tensor],
    optimizer_states: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, float]],
) -> dict[str, Any]:
    """Hash a finished run.

    Args:
        model_state: The model's ``state_dict()``.
        optimizer_states: Each optimizer's ``state_dict()``, in a fixed order.
        history: One metrics dict per epoch (the keys in ``METRIC_KEYS``).

    Returns:
        ``{"weights", "optimizer", "metrics"}`` SHA-256 hex digests, and ``"parameters"``: one
        digest per state-dict entry, to locate which tensors differ between two runs.
    """
    return {
        "weights": _digest(_feed_state(model_state)),
        "optimizer": _digest(_feed_value(list(optimizer_states))),
        "metrics": metrics_digest(history),
        "parameters": {name: tensor_digest(t) for name, t in sorted(model_state.items())},
    }


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and raw bytes."""
    return _digest(_feed_tensor(tensor))


def metrics_digest(history: Sequence[Mapping[str, float]]) -> str:
    """SHA-256 of the float64 bit patterns of every metric in ``METRIC_KEYS`` order, per epoch."""
    return _digest(struct.pack("<d", float(row[key])) for row in history for key in METRIC_KEYS)


def _digest(chunks: Iterable[bytes]) -> str:
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(chunk)
    return sha.hexdigest()


def _feed_tensor(tensor: torch.Tensor) -> Iterable[bytes]:
    t = tensor.detach().cpu().contiguous()
    yield f"tensor:{t.dtype}:{tuple(t.shape)}:".encode()
    yield t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _feed_state(state: Mapping[str, Any]) -> Iterable[bytes]:
    for key in sorted(state, key=str):
        yield f"key:{key}:".encode()
        yield from _feed_value(state[key])


def _feed_value(value: Any) -> Iterable[bytes]:
    """Serialise nested dicts, lists, tensors and scalars canonically (dict keys sorted)."""
    if isinstance(value, torch.Tensor):
        yield from _feed_tensor(value)
    elif isinstance(value, Mapping):
        yield b"{"
        yield from _feed_state(value)
        yield b"}"
    elif isinstance(value, list | tuple):
        yield b"["
        for item in value:
            yield from _feed_value(item)
        yield b"]"
    elif isinstance(value, float):
        yield b"f" + struct.pack("<d", value)
    else:
        yield f"{type(value).__name__}:{value!r};".encode()
