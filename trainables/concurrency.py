"""CUDA streams and process-wide state of trainings that share a process.

A process may run several trainings: a sweep's training host steps a group per shape
(``trainables.host``), and ``train()`` may be called from several threads. Each group warms up,
captures and replays its CUDA graph on a *lane*: streams of its own. cuBLAS keys its workspace
by stream and a captured graph keeps the workspaces of the streams it was captured on, so two
groups replaying graphs captured on one stream race on a workspace (measured: other bits).
cuBLAS keeps a workspace for every stream it has run on for the life of the process (32 MiB
each), so a lane lives as long as its group, and groups are kept for the next trials of their
shape (``trainables.train.GroupRunner``) rather than made anew per training.

:data:`PROCESS_LOCK` is held wherever a training touches process-wide state: seeding and
parameter initialisation, compilation, graph capture. Random numbers need no lock: they are
counter-based (``trainables.noise``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

import torch
from torch import Tensor

PROCESS_LOCK = threading.RLock()
"""Held while a training touches process-wide state (global RNGs, torch.compile, capture)."""


@dataclass
class Lane:
    """CUDA streams of one group: its main stream, and streams for capture and warm-up.

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


class HostCopy:
    """A device tensor's values on their way to the host; :meth:`values` waits for them.

    The copy starts when the object is made, on the current stream.

    Waiting on an event, not on a blocking copy, leaves Python's GIL free meanwhile, and a
    caller can start more work (other groups' epochs) before it waits.
    """

    def __init__(self, values: Tensor):
        self._event: torch.cuda.Event | None = None
        if values.device.type != "cuda":
            self._host = values.clone()
            return
        self._host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        self._host.copy_(values, non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record()

    def values(self) -> list:
        """The values, as ``Tensor.tolist()`` gives them, once the copy has arrived."""
        if self._event is not None:
            self._event.synchronize()
        return self._host.tolist()


def new_stream() -> torch.cuda.ExternalStream:
    """A CUDA stream of its own on the current device.

    ``torch.cuda.Stream()`` hands out 32 pooled streams in turn, so trainings would share
    streams past a few; this one is made for the caller and lives as long as the process.
    """
    cudart = torch.cuda.cudart()
    handle = ctypes.c_void_p()
    error = cudart.cudaStreamCreate(ctypes.addressof(handle))
    if int(error) != 0:
        raise RuntimeError(stream_error(int(error), cudart.cudaGetErrorString(error)))
    return torch.cuda.ExternalStream(handle.value)


def stream_error(code: int, description: str) -> str:
    """Why a stream could not be made, and, where the environment can explain it, how.

    ``CUDA_DEVICE_MAX_CONNECTIONS`` gives every process that many hardware queues on its GPU;
    with many processes on one GPU they can run out (H200, the variable at 32: trials of
    process-per-trial sweeps of 16 and 64 failed here with CUDA error 2, and 3 of 16 processes
    of a probe gave no result; with it unset the probe's 16 and 32 processes made their
    streams; ``docs/performance.md``).
    """
    message = f"cudaStreamCreate failed: {description} (CUDA error {code})"
    connections = os.environ.get("CUDA_DEVICE_MAX_CONNECTIONS")
    if connections is not None:
        message += (
            f"; CUDA_DEVICE_MAX_CONNECTIONS={connections} gives each process on a GPU that many "
            "hardware queues, which many processes on one GPU can use up: unset it, or train a "
            "GPU's trials in one process (resources.one_process_per_gpu)"
        )
    return message
