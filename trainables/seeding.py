"""Seeding and deterministic-mode switches for one training process.

:func:`set_seed` seeds every global RNG (Python, NumPy, torch CPU and CUDA), applies or lifts
torch's determinism switches, fixes the CPU thread count and returns what it set, read back from
torch. :func:`determinism_env` lists the environment a worker needs before any CUDA work;
:func:`torch_generator` gives a seeded generator for data shuffling.
"""

from __future__ import annotations

import numbers
import os
import random
import warnings
from collections.abc import Callable
from typing import Any, get_args

import numpy as np
import torch

from trainables.config import CudaMatmulPrecision
from trainables.constants import MKL_CBWR

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
"""cuBLAS workspace setting that makes cuBLAS deterministic (``":16:8"`` also would, slower)."""

_MAX_SEED = 2**32  # exclusive; NumPy's legacy global RNG takes seeds in [0, 2**32)

# torch >= 2.9 keeps TF32 in per-backend "fp32_precision" flags, paths under torch.backends
# ("" is torch.backends.fp32_precision, recorded as "generic"). The legacy allow_tf32 switches
# write only the leaf flags, which then inherit a parent's "tf32" if someone set one through the
# new API, so deterministic mode pins every level explicitly. See
# https://pytorch.org/docs/main/notes/cuda.html#tensorfloat-32-tf32-on-ampere-and-later-devices
_FP32_PRECISION_FLAGS = (
    "",
    "cuda.matmul",
    "cudnn",
    "cudnn.conv",
    "cudnn.rnn",
    "mkldnn",
    "mkldnn.matmul",
    "mkldnn.conv",
    "mkldnn.rnn",
)


def determinism_env() -> dict[str, str]:
    """Return the environment variables a worker process needs before its first matrix product.

    The Ray driver sets these in the Ray it starts, whose workers inherit them, or passes them
    to a cluster's workers through ``runtime_env={"env_vars": ...}``: cuBLAS reads its
    workspace setting and MKL its reproducibility mode (``MKL_CBWR``) once, at their first use
    in the process, so setting them later has no effect.
    """
    return {"CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE_CONFIG, "MKL_CBWR": MKL_CBWR}


def set_seed(
    seed: int,
    deterministic: bool,
    cpu_threads: int = 1,
    cuda_matmul_precision: CudaMatmulPrecision = "ieee",
) -> dict[str, Any]:
    """Seed every global RNG and apply torch's determinism switches; return what was set.

    Seeds Python's ``random``, NumPy's global RNG and torch on the CPU and all CUDA devices. With
    ``deterministic=True`` torch raises on ops that have no deterministic implementation, cuDNN
    autotuning and TF32 are off everywhere but where ``cuda_matmul_precision`` asks for it, and
    ``CUBLAS_WORKSPACE_CONFIG`` is set if unset. With ``deterministic=False`` the deterministic
    checks are off and cuDNN autotuning is on; TF32 elsewhere than CUDA matmuls is left as it is
    (torch's defaults, unless an earlier call changed them) and recorded. The CPU thread count
    and the precision of CUDA float32 matmuls are always set, as both change results.

    TF32 matmuls (``"tf32"``: tensor cores, inputs rounded to a 10-bit mantissa) are as
    deterministic as IEEE ones: a run repeats bit for bit, but gives other bits than in IEEE
    float32. They need an Ampere or later GPU (elsewhere matmuls stay IEEE); CPU matmuls are
    not affected.

    Args:
        seed: The seed, an integer in ``[0, 2**32)``.
        deterministic: Whether to make torch raise on, or avoid, nondeterministic kernels.
        cpu_threads: Threads for torch's intra-op CPU parallelism.
        cuda_matmul_precision: ``"ieee"`` (float32) or ``"tf32"`` for float32 matmuls on CUDA.

    Returns:
        A JSON-ready record of the settings, read back from torch and the environment:
        ``seed``, ``deterministic``, ``cpu_threads``, ``torch_deterministic_algorithms``,
        ``torch_deterministic_warn_only``, ``inductor_deterministic`` (torch.compile's mode,
        which ``torch.use_deterministic_algorithms`` also sets), ``cudnn_deterministic``,
        ``cudnn_benchmark``, ``matmul_allow_tf32``, ``cudnn_allow_tf32`` (None where torch
        cannot tell because the legacy and new TF32 APIs were mixed),
        ``float32_matmul_precision``, ``fp32_precision`` (the new-API flag per backend path),
        ``cublas_workspace_config``, ``mkl_cbwr`` and ``python_hash_seed``
        (``PYTHONHASHSEED`` as the process started, or None).

    Raises:
        ValueError: ``seed`` is not an integer in ``[0, 2**32)``, ``cpu_threads`` is not a
            positive integer, or ``cuda_matmul_precision`` is neither ``"ieee"`` nor ``"tf32"``.
    """
    seed = _check_seed(seed)
    if isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int) or cpu_threads < 1:
        raise ValueError(f"cpu_threads must be an integer >= 1, got {cpu_threads!r}")
    if cuda_matmul_precision not in get_args(CudaMatmulPrecision):
        raise ValueError(
            f"cuda_matmul_precision must be one of {get_args(CudaMatmulPrecision)}, "
            f"got {cuda_matmul_precision!r}"
        )
    if deterministic:
        _set_cublas_workspace_config()

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too; both calls are lazy if CUDA is not initialized
    torch.cuda.manual_seed_all(seed)

    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    # Deterministic mode also fills every torch.empty with NaN, a debugging aid that costs
    # kernels (8% of a graphed step on an H100) and changes no result of correct code.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        for owner in _fp32_flag_owners().values():
            owner.fp32_precision = "ieee"
    # The legacy switch writes the leaf flag (cuda.matmul), which overrides its parents.
    torch.backends.cuda.matmul.allow_tf32 = cuda_matmul_precision == "tf32"
    torch.set_num_threads(cpu_threads)

    return {
        "seed": seed,
        "deterministic": deterministic,
        "cpu_threads": torch.get_num_threads(),
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "torch_deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "fill_uninitialized_memory": torch.utils.deterministic.fill_uninitialized_memory,
        "inductor_deterministic": _inductor_deterministic(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_allow_tf32": _read_tf32(lambda: torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": _read_tf32(lambda: torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": _read_tf32(torch.get_float32_matmul_precision),
        "fp32_precision": fp32_precision_flags(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),  # read by MKL at its first use in the process
        # Read once at interpreter start: it can be recorded here, not changed.
        "python_hash_seed": os.environ.get("PYTHONHASHSEED"),
    }


def fp32_precision_flags() -> dict[str, str]:
    """Return torch's new-API TF32 flags by path under ``torch.backends`` (``"generic"``: top).

    Values are ``"ieee"`` (full float32), ``"tf32"``, ``"bf16"`` or ``"none"`` (inherit the
    parent's flag); empty when this torch has no such API.
    """
    return {path: owner.fp32_precision for path, owner in _fp32_flag_owners().items()}


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a new generator on ``device`` seeded with ``seed``, independent of the global RNG.

    Args:
        seed: The seed, an integer in ``[0, 2**32)``.
        device: Where the generator lives (``"cpu"``, ``"cuda:0"``, ...); it must match the
            device of the tensors it draws (``torch.randperm(n, generator=g, device=...)``).

    Raises:
        ValueError: ``seed`` is not an integer in ``[0, 2**32)``.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(_check_seed(seed))
    return generator


# --- internals -----------------------------------------------------------------------------


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def _set_cublas_workspace_config() -> None:
    # cuBLAS reads this once, at its first use in the process (TRAPS.md): it must be set before
    # any CUDA work. A value already set is the user's choice and is left alone.
    if "CUBLAS_WORKSPACE_CONFIG" in os.environ:
        return
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
    if torch.cuda.is_initialized():
        warnings.warn(
            "CUBLAS_WORKSPACE_CONFIG was set after CUDA was initialized; if cuBLAS has been used "
            "in this process, it keeps its old workspace and may be nondeterministic. Set it "
            "before any CUDA work (see determinism_env()).",
            RuntimeWarning,
            stacklevel=3,
        )


def _fp32_flag_owners() -> dict[str, Any]:
    owners = {}
    for path in _FP32_PRECISION_FLAGS:
        owner: Any = torch.backends
        for part in filter(None, path.split(".")):
            owner = getattr(owner, part, None)
        if hasattr(owner, "fp32_precision"):  # absent before torch 2.9
            owners[path or "generic"] = owner
    return owners


def _inductor_deterministic() -> bool:
    # Private, but it is what torch.use_deterministic_algorithms sets (and imports, ~2 s the
    # first time): it turns off Inductor's benchmark-driven choices that change numerics.
    import torch._inductor.config as inductor_config

    return bool(inductor_config.deterministic)


def _read_tf32(getter: Callable[[], Any]) -> Any:
    # torch raises RuntimeError when legacy and new-API TF32 flags disagree (for example
    # cudnn.conv and cudnn.rnn set differently): record "unknown" rather than fail.
    try:
        return getter()
    except RuntimeError:
        return None
