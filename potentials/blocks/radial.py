"""Radial bases of the edge length ``r`` (Å), each times a smooth cutoff envelope.

With ``d = r / r_c``:

    f_env(d) = 1 - (p+1)(p+2)/2 d^p + p(p+2) d^(p+1) - p(p+1)/2 d^(p+2)   (d < 1, else 0)
    Bessel:    R_n(r) = sqrt(2/r_c) sin(w_n d) / r * f_env(d),  w_n trainable, starting at n pi
    B-spline:  R_p(r) = B_p(r) f_env(d),  the n_intervals + 3 uniform cubic B-splines on [0, r_c]

The envelope and its first ``p - 1`` derivatives vanish at ``d = 1``, so every
basis function goes smoothly to zero at the cutoff.
"""

import math

import torch
from torch import Tensor

from .bsplines import dense_basis


def polynomial_envelope(d: Tensor, p: float) -> Tensor:
    """``1 - (p+1)(p+2)/2 d^p + p(p+2) d^(p+1) - p(p+1)/2 d^(p+2)`` for ``d < 1``, else 0.

    ``d = r / r_c``; the envelope and its first ``p - 1`` derivatives vanish at ``d = 1``.
    """
    value = (1.0 - (p + 1.0) * (p + 2.0) / 2.0 * d.pow(p) + p * (p + 2.0) * d.pow(p + 1.0)
             - p * (p + 1.0) / 2.0 * d.pow(p + 2.0))
    return value * (d < 1.0).to(d.dtype)


class BesselBasis(torch.nn.Module):
    """``R_n(r) = sqrt(2/r_c) sin(w_n r / r_c) / r`` times the polynomial envelope; ``w_n`` starts at ``n pi``."""

    def __init__(self, cutoff: float, num_basis: int, envelope_power: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.power = float(envelope_power)
        self.prefactor = math.sqrt(2.0 / cutoff)
        self.frequencies = torch.nn.Parameter(math.pi * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()))

    def forward(self, r: Tensor) -> Tensor:
        d = (r / self.cutoff).unsqueeze(-1)
        basis = self.prefactor * torch.sin(self.frequencies * d) / r.unsqueeze(-1)
        return basis * polynomial_envelope(d, self.power)


class SplineRadialBasis(torch.nn.Module):
    """``f_env(r/r_c) B_p(r)`` for the ``n_intervals + 3`` uniform cubic B-splines on ``[0, r_c]`` (Å)."""

    def __init__(self, cutoff: float, n_intervals: int, envelope_power: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.n_intervals = int(n_intervals)
        self.spacing = self.cutoff / self.n_intervals
        self.power = float(envelope_power)
        self.num_basis = self.n_intervals + 3

    def forward(self, r: Tensor) -> Tensor:
        basis = dense_basis(r, 0.0, self.spacing, self.n_intervals)
        return basis * polynomial_envelope((r / self.cutoff).unsqueeze(-1), self.power)
