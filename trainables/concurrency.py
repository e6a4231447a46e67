"""What lets several trainings run at once in one process, each in a thread of its own.

Kernels of one process on different CUDA streams run at the same time; kernels of different
processes sharing a GPU are time-sliced. So trials packed on a GPU go faster side by side in
one process (``docs/performance.md``). ``train()`` always runs this way, alone or not:

- on a *lane*: CUDA streams that no other running training uses. cuBLAS keys its workspace by
  stream and a captured graph keeps the workspaces of the streams it was captured on, so two
  trainings replaying graphs captured on one stream race on a workspace (measured: other bits).
  Lanes are made once and handed out again when free: cuBLAS keeps a workspace for every stream
  it has run on for the life of the process (32 MiB each), so new streams per training would
  grow a reused process's memory without end.
- with its *own noise generator* for dropout and the reparameterisation noise, which draw from
  torch's default generator of the device. It starts where the default generator stands after
  parameter initialisation (so a run's draws are those it always had) and is swapped in, under
  :data:`PROCESS_LOCK`, while the training's eager random steps run or its graph is captured;
  a captured graph keeps drawing from it on every replay without a swap.
- under :data:`PROCESS_LOCK` wherever it touches process-wide state: seeding and parameter
  initialisation, compilation, eager steps that draw random numbers, graph capture.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

PROCESS_LOCK = threading.RLock()
"""Held while a training touches process-wide state (global RNGs, torch.compile, capture)."""


@dataclass
class Lane:
    """CUDA streams of one running training: its main stream plus side streams.

    ``optimizer`` has a stream per optimizer; ``capture`` and ``warmup`` are for graph capture
    and the eager steps before it. All are None on the CPU.
    """

    device: torch.device
    main: torch.cuda.Stream | None = None
    optimizer: list[torch.cuda.Stream] = field(default_factory=list)
    capture: torch.cuda.Stream | None = None
    warmup: torch.cuda.Stream | None = None

    def __post_init__(self):
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                self.main, self.capture, self.warmup = (new_stream() for _ in range(3))

    def optimizer_streams(self, n: int) -> list[torch.cuda.Stream]:
        """A stream per optimizer, for ``n`` optimizers (made the first time they are asked for)."""
        with torch.cuda.device(self.device):
            while len(self.optimizer) < n:
                self.optimizer.append(new_stream())
        return self.optimizer[:n]


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


def shared_process_env() -> dict[str, str]:
    """Environment for a process whose trainings run side by side; set it before CUDA starts.

    Their streams get CUDA's 32 hardware queues instead of its default 8 (docs/performance.md:
    +25% epochs/s at 8 trainings in one process, H200); a value the user set stays.
    """
    return {"CUDA_DEVICE_MAX_CONNECTIONS": os.environ.get("CUDA_DEVICE_MAX_CONNECTIONS", "32")}


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


def fork_default_generator(device: torch.device) -> torch.Generator:
    """A generator on ``device`` with the state of torch's default generator there, now."""
    default = default_generator(device)
    generator = torch.Generator(device=device)
    generator.set_state(default.get_state())
    return generator


def default_generator(device: torch.device) -> torch.Generator:
    """The default generator of ``device``: what dropout and ``randn_like`` draw from."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.default_generators[index]
    return torch.default_generator


@contextmanager
def drawing_from(generator: torch.Generator) -> Iterator[None]:
    """Make ``generator`` torch's default generator of its device for the body.

    Holds :data:`PROCESS_LOCK`. On CUDA the default generator shares ``generator``'s state (the
    graph-safe swap), so a CUDA graph captured in the body draws from ``generator`` whenever it
    is replayed; on the CPU the states are copied in and back out.
    """
    default = default_generator(generator.device)
    with PROCESS_LOCK:
        if generator.device.type == "cuda":
            own = default.graphsafe_get_state()
            default.graphsafe_set_state(generator.graphsafe_get_state())
            try:
                yield
            finally:
                default.graphsafe_set_state(own)
            return
        own_state = default.get_state()
        default.set_state(generator.get_state())
        try:
            yield
        finally:
            generator.set_state(default.get_state())
            default.set_state(own_state)
