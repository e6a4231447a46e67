"""Counter-based random numbers: a draw is a function of (seed, step, site, element) alone.

Trials trained side by side in one batched computation must each draw what they would draw
alone, whatever their position and companions; a stateful generator shared by the batch cannot
give that, and one generator per trial costs a kernel per trial per draw. Here a draw is a hash
of its key, computed elementwise (so ``torch.compile`` fuses it into the ops that use it), and
resuming a run needs no generator state: the step is the counter.

Hand-written because torch has no keyed, stateless generator (its Philox offsets depend on the
shape of the whole draw). The hash is Wellons' ``lowbias32`` integer finaliser (bias ~1.7e-4,
https://nullprogram.com/blog/2018/07/31/), applied in 32-bit arithmetic held in int64 so that
no multiplication overflows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_SITE_MULTIPLIER = 0x9E3779B9  # 2**32 / golden ratio: spreads site and element counters


def _mul32(x: Tensor, constant: int) -> Tensor:
    """``x * constant mod 2**32`` for ``0 <= x < 2**32``, exact in int64 (no overflow)."""
    high, low = constant >> 16, constant & 0xFFFF
    return ((((x * high) & 0xFFFF) << 16) + x * low) & _MASK32


def mix32(x: Tensor) -> Tensor:
    """The ``lowbias32`` finaliser on int64 values in ``[0, 2**32)``."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def stream_keys(seeds: Tensor, steps: Tensor, site: int) -> Tensor:
    """One key per trial for a draw site at a step: ``(W,)`` int64 in ``[0, 2**32)``.

    Args:
        seeds: ``(W,)`` int64 trial seeds (< 2**32).
        steps: ``(W,)`` int64 optimizer steps of the trials (< 2**32).
        site: Which draw of the step (a small constant per dropout layer or noise term).
    """
    key = mix32(seeds & _MASK32)
    key = mix32(key ^ (steps & _MASK32))
    return mix32(key ^ ((site * _SITE_MULTIPLIER) & _MASK32))


def uniform(keys: Tensor, shape: tuple[int, ...], offset: int = 0) -> Tensor:
    """``(W, *shape)`` float32 draws in (0, 1), element ``i`` of trial ``w`` from ``keys[w], i``.

    ``offset`` shifts the element counter (two independent draws from one key).
    """
    n = math.prod(shape)
    counter = torch.arange(offset, offset + n, device=keys.device, dtype=torch.int64)
    bits = mix32(mix32(keys.view(-1, 1) ^ _mul32(counter, _SITE_MULTIPLIER)) ^ counter)
    return ((bits >> 8).to(torch.float32) * 2.0**-24 + 2.0**-25).view(-1, *shape)


def normal(keys: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``(W, *shape)`` standard normal float32 draws (Box-Muller on two uniform draws)."""
    n = math.prod(shape)
    u1, u2 = uniform(keys, shape), uniform(keys, shape, offset=n)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
