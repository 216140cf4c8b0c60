"""Uniform cubic B-splines on ``[start, start + n_intervals * spacing]`` (lengths in Å).

There are ``n_intervals + 3`` basis functions ``B_p(x) = N((x - start) / spacing - p + 3)``,
``N`` the cardinal cubic B-spline on ``[0, 4]``; on the interval they sum to one. Outside
it every function continues linearly from the nearest end (value and slope), so a spline
stays finite and C1 there. Shared by the ``spline`` family (pair and triplet terms) and
:class:`potentials.blocks.radial.SplineRadialBasis`.
"""

from typing import Tuple

import torch
from torch import Tensor


def local_basis(x: Tensor, start: float, spacing: float, n_intervals: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The four cubic B-splines that are non-zero at each ``x`` (Å).

    Returns ``(first [n], values [n,4], derivatives [n,4])``: basis functions
    ``first .. first+3`` (of ``n_intervals + 3``) have ``values`` and d/dx
    ``derivatives`` (1/Å). Uniform cubic Cox-de Boor closed form with
    ``t = (x - start)/spacing - m`` in interval ``m``::

        B_m = (1-t)^3/6,  B_{m+1} = (3t^3 - 6t^2 + 4)/6,  B_{m+2} = (-3t^3 + 3t^2 + 3t + 1)/6,  B_{m+3} = t^3/6

    Outside ``[start, start + n_intervals * spacing]`` the basis continues linearly
    from the nearest end. Differentiable in ``x``.
    """
    end = start + n_intervals * spacing
    inside = x.clamp(start, end)
    scaled = (inside - start) / spacing
    first = scaled.detach().floor().clamp(0, n_intervals - 1)
    t = scaled - first
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    values = torch.stack([s * s * s / 6.0, (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
                          (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0, t3 / 6.0], dim=-1)
    derivatives = torch.stack([-0.5 * s * s, 1.5 * t2 - 2.0 * t, -1.5 * t2 + t + 0.5, 0.5 * t2], dim=-1) / spacing
    values = values + (x - inside).unsqueeze(-1) * derivatives
    return first.to(torch.int64), values, derivatives


def dense_basis(x: Tensor, start: float, spacing: float, n_intervals: int) -> Tensor:
    """All ``n_intervals + 3`` basis functions at ``x``: ``[n, n_intervals + 3]``."""
    first, values, _ = local_basis(x, start, spacing, n_intervals)
    out = torch.zeros(x.shape[0], n_intervals + 3, dtype=x.dtype, device=x.device)
    columns = first.unsqueeze(-1) + torch.arange(4, device=x.device)
    return out.scatter_add(1, columns, values)
