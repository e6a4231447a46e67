"""Canonical SHA-256 hashes of a run: weights, optimizer states and metric history.

Two runs are bit-for-bit identical exactly when their digests are equal. Hashes cover
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
from trainables.run_record import Fingerprint


def fingerprint(
    model_state: Mapping[str, torch.Tensor],
    optimizer_states: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, float]],
) -> Fingerprint:
    """Hash a finished run, reading every tensor's bytes once.

    Args:
        model_state: The model's ``state_dict()``.
        optimizer_states: Each optimizer's ``state_dict()``, in a fixed order.
        history: One metrics mapping per epoch (the keys in ``METRIC_KEYS``).

    Returns:
        The run's fingerprint: the same for the same bits, whatever process computes it.
        ``parameters[name]`` equals ``tensor_digest(model_state[name])``.
    """
    weights = hashlib.sha256()
    parameters = {}
    for name in sorted(model_state, key=str):
        weights.update(f"key:{name}:".encode())
        parameters[name] = _digest(_feed_value(model_state[name]), also=weights)
    optimizer = hashlib.sha256(b"[")
    optimizers = tuple(_digest(_feed_value(s), also=optimizer) for s in optimizer_states)
    optimizer.update(b"]")
    return Fingerprint(
        weights=weights.hexdigest(),
        optimizer=optimizer.hexdigest(),
        metrics=metrics_digest(history),
        parameters=parameters,
        optimizers=optimizers,
        epochs=tuple(metrics_digest([row]) for row in history),
    )


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and raw bytes."""
    return _digest(_feed_tensor(tensor))


def metrics_digest(history: Sequence[Mapping[str, float]]) -> str:
    """SHA-256 of the float64 bit patterns of every metric in ``METRIC_KEYS`` order, per epoch."""
    return _digest(struct.pack("<d", float(row[key])) for row in history for key in METRIC_KEYS)


def _digest(chunks: Iterable[bytes], also: Any = None) -> str:
    """SHA-256 of the chunks, each fed to the hash ``also`` too (a digest of a larger whole)."""
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(chunk)
        if also is not None:
            also.update(chunk)
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
