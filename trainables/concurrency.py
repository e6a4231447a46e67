"""CUDA streams and process-wide state of trainings that share a process.

A process may run several trainings: a sweep's training host steps a group per shape
(``trainables.host``), and ``train()`` may be called from several threads. Each group warms up,
captures and replays its CUDA graph on a *lane*: streams no other running group uses. cuBLAS
keys its workspace by stream and a captured graph keeps the workspaces of the streams it was
captured on, so two groups replaying graphs captured on one stream race on a workspace
(measured: other bits). Lanes are made once and handed out again when free: cuBLAS keeps a
workspace for every stream it has run on for the life of the process (32 MiB each), so new
streams per training would grow a reused process's memory without end.

:data:`PROCESS_LOCK` is held wherever a training touches process-wide state: seeding and
parameter initialisation, compilation, graph capture. Random numbers need no lock: they are
counter-based (``trainables.noise``).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

PROCESS_LOCK = threading.RLock()
"""Held while a training touches process-wide state (global RNGs, torch.compile, capture)."""


@dataclass
class Lane:
    """CUDA streams of one running group: its main stream, and streams for capture and warm-up.

    All are None on the CPU.
    """

    device: torch.device
    main: torch.cuda.Stream | None = None
    capture: torch.cuda.Stream | None = None
    warmup: torch.cuda.Stream | None = None

    def __post_init__(self):
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                self.main, self.capture, self.warmup = (new_stream() for _ in range(3))


_FREE_LANES: dict[torch.device, list[Lane]] = {}


@contextmanager
def lane(device: torch.device) -> Iterator[Lane]:
    """A lane on ``device`` that no other training holds until this context ends.

    On CUDA, the body runs with the lane's main stream as the thread's current stream.
    """
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    with PROCESS_LOCK:
        free = _FREE_LANES.setdefault(device, [])
        held = free.pop() if free else Lane(device)
    try:
        if held.main is None:
            yield held
        else:
            with torch.cuda.stream(held.main):
                yield held
    finally:
        if held.main is not None:
            held.main.synchronize()  # nothing of this training may still run on a lane reused
        with PROCESS_LOCK:
            _FREE_LANES[device].append(held)


def host_values(values: Tensor) -> list[float]:
    """``values.tolist()``, waiting for the GPU without holding Python's GIL.

    A blocking copy to the host holds the GIL while the GPU finishes, and so stalls every
    other training of the process; waiting on an event lets them go on launching work.
    """
    if values.device.type != "cuda":
        return values.tolist()
    host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
    host.copy_(values, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    copied.synchronize()
    return host.tolist()


def new_stream() -> torch.cuda.ExternalStream:
    """A CUDA stream of its own on the current device.

    ``torch.cuda.Stream()`` hands out 32 pooled streams in turn, so trainings would share
    streams past a few; this one is made for the caller and lives as long as the process.
    """
    handle = ctypes.c_void_p()
    error = torch.cuda.cudart().cudaStreamCreate(ctypes.addressof(handle))
    if int(error) != 0:
        raise RuntimeError(f"cudaStreamCreate failed with CUDA error {int(error)}")
    return torch.cuda.ExternalStream(handle.value)
