"""Counter-based Gaussian noise: reproducible, batch-invariant, device-invariant.

The noise for replica ``b`` at step ``n`` on atom ``i`` (its index inside the
replica) and component ``k`` is a pure function of ``(seed_b, n, stream, i, k)``:

    u = hash(hash(hash(seed_b) + n * S + stream) + 3 i + k)   (SplitMix64 finaliser)
    xi = sqrt(-2 ln u1) cos(2 pi u2)                          (Box-Muller)

So a replica gets the same random numbers whether it runs alone or in a batch
of 64, on CPU or CUDA, and a restart needs only the seed and step count.
"""

import math

import torch
from torch import Tensor

# Masks that turn torch's arithmetic right shift of int64 into a logical one.
_LOW_34 = (1 << 34) - 1
_LOW_37 = (1 << 37) - 1
_LOW_33 = (1 << 33) - 1
_LOW_53 = (1 << 53) - 1


def _to_int64(value: int) -> int:
    """Reinterpret an unsigned 64-bit constant as a signed int64 (torch has no uint64 arithmetic)."""
    return value - (1 << 64) if value >= (1 << 63) else value


_GOLDEN = _to_int64(0x9E3779B97F4A7C15)
_MIX_1 = _to_int64(0xBF58476D1CE4E5B9)
_MIX_2 = _to_int64(0x94D049BB133111EB)


def splitmix64(x: Tensor) -> Tensor:
    """The SplitMix64 finaliser on int64 tensors (wrapping arithmetic, logical shifts)."""
    x = x + _GOLDEN
    x = (x ^ ((x >> 30) & _LOW_34)) * _MIX_1
    x = (x ^ ((x >> 27) & _LOW_37)) * _MIX_2
    return x ^ ((x >> 31) & _LOW_33)


def _uniform(bits: Tensor, dtype: torch.dtype) -> Tensor:
    """53 high bits to a double in (0, 1]."""
    mantissa = (bits >> 11) & _LOW_53
    return (mantissa.to(torch.float64) + 1.0).mul_(1.0 / 9007199254740992.0).to(dtype)


def gaussian_noise(seeds: Tensor, step: int, stream: int, batch: Tensor, local_index: Tensor,
                   columns: int = 3, dtype: torch.dtype = torch.float64) -> Tensor:
    """Standard normal noise ``[N, columns]``.

    Args:
        seeds: ``[B]`` int64 seed of each replica.
        step: integer step counter.
        stream: distinguishes several draws within one step (e.g. two O half-steps).
        batch: ``[N]`` replica index of each row.
        local_index: ``[N]`` index of each row inside its replica.
    """
    base = splitmix64(splitmix64(seeds)[batch] + (step * 1_000_003 + stream))
    counter = local_index.unsqueeze(1) * (2 * columns) + torch.arange(
        2 * columns, device=local_index.device
    ).unsqueeze(0)
    bits = splitmix64(base.unsqueeze(1) + counter)
    u1 = _uniform(bits[:, :columns], torch.float64)
    u2 = _uniform(bits[:, columns:], torch.float64)
    normal = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    return normal.to(dtype)
