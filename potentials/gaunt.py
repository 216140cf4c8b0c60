r"""Gaunt tensor product through a spherical grid.

Two signals are read as functions on the unit sphere,

.. math:: f_1(\hat r) = \sum_{l \le L_1} x_1^{l} \cdot Y^{l}(\hat r), \qquad
          f_2(\hat r) = \sum_{l \le L_2} x_2^{l} \cdot Y^{l}(\hat r),

sampled on a grid, multiplied point by point, and projected back:

.. math:: y^{l_3}_{m_3} = \int_{S^2} f_1 f_2\, Y^{l_3}_{m_3}\, d\Omega
          = \sum G^{l_1 l_2 l_3}_{m_1 m_2 m_3}\, x^{l_1}_{1,m_1} x^{l_2}_{2,m_2},
          \qquad G = \int Y^{l_1}_{m_1} Y^{l_2}_{m_2} Y^{l_3}_{m_3}\, d\Omega .

``G`` are the real Gaunt coefficients. For each path they equal e3nn's
Wigner-3j symbol times one scalar, so this is the Clebsch-Gordan tensor product
with fixed path weights (Luo et al. 2024; "The Price of Freedom", Xie et al. 2025).
Because ``Y^{l_1} Y^{l_2} Y^{l_3}`` has parity ``(-1)^{l_1+l_2+l_3}``, ``G``
vanishes unless ``l_1 + l_2 + l_3`` is even: the product of two functions on the
sphere can only form the parity-even paths. Odd paths such as the cross product
``1o x 1o -> 1e`` (and every ``l_1+l_2+l_3`` odd path, e.g. ``1o x 2e -> 2o``) can
not be formed; use a Clebsch-Gordan product where they are needed.

Conventions (e3nn's, used throughout):

- irreps are ``o3.Irreps.spherical_harmonics(L) = 0e + 1o + 2e + ...``, the
  ``(L+1)^2`` components ordered by ``l`` then ``m = -l..l``, e3nn's real
  spherical harmonics (y is the polar axis of the grid).
- ``normalization="integral"``: the ``Y^l_m`` are orthonormal on the sphere,
  ``\int Y^l_m Y^{l'}_{m'} d\Omega = \delta\delta``, so the output is exactly the
  Gaunt integral above (e3nn's "component" harmonics are ``\sqrt{4\pi}`` times
  these).

Resolution rule. On e3nn's grid (``res_beta`` Driscoll-Healy / Kostelec-Rockmore
nodes in the polar angle, ``res_alpha`` uniform nodes in the azimuth) the back
projection integrates ``f_1 f_2 Y^{l_3}``, a band-limited function of degree
``D = L_1 + L_2 + L_out``. Per azimuthal frequency ``m`` it is a polynomial of
degree ``D`` in ``cos(beta)``, integrated exactly by the ``res_beta``-node rule
iff ``res_beta >= D + 1``; the azimuthal sum separates frequency ``m`` from
``m +- res_alpha`` without aliasing iff ``res_alpha >= D + 1``. Hence

    res_beta  = max(D + 1 rounded up to even, 2 (max(L_1, L_2, L_out) + 1))
    res_alpha = D + 1 rounded up to odd

(e3nn requires an even ``res_beta`` of at least ``2 (l + 1)``). With this grid
the product is exact to round-off; a coarser grid is not (see the tests).

TorchScript: e3nn's ``ToS2Grid``/``FromS2Grid`` do not compile with
``torch.jit.script`` (their ``rfft``/``irfft`` helpers use starred unpacking of
``x.shape``), and ``e3nn.util.jit.compile`` fails on ``ToS2Grid``'s tracing
inputs in e3nn 0.6. They are linear, so this module evaluates them once at
construction to obtain the dense matrices ``to_grid [(L+1)^2, n_grid]`` and
``from_grid [n_grid, (L_out+1)^2]``; ``forward`` is then three matmuls and a
product and compiles with ``torch.jit.script``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from e3nn import o3


def grid_resolution(lmax1: int, lmax2: int, lmax_out: int) -> Tuple[int, int]:
    """(res_beta, res_alpha) of the coarsest e3nn grid on which the product is exact."""
    degree = lmax1 + lmax2 + lmax_out
    res_beta = max(degree + 1 + (degree + 1) % 2, 2 * (max(lmax1, lmax2, lmax_out) + 1))
    res_alpha = degree + 1 + degree % 2
    return res_beta, res_alpha


def even_paths(lmax1: int, lmax2: int, lmax_out: int) -> List[Tuple[int, int, int]]:
    """All (l1, l2, l3) with |l1-l2| <= l3 <= l1+l2 and l1+l2+l3 even: the Gaunt paths."""
    return [
        (l1, l2, l3)
        for l1 in range(lmax1 + 1)
        for l2 in range(lmax2 + 1)
        for l3 in range(abs(l1 - l2), min(l1 + l2, lmax_out) + 1)
        if (l1 + l2 + l3) % 2 == 0
    ]


def _grid_matrices(lmax1: int, lmax2: int, lmax_out: int, res: Tuple[int, int]):
    """Dense matrices of e3nn's ToS2Grid (for lmax1, lmax2) and FromS2Grid (to lmax_out), float64.

    e3nn builds its quadrature weights in the default dtype, so they are built
    here under float64 to keep the product exact to ~1e-15 rather than ~1e-7.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        mats = []
        for lmax in (lmax1, lmax2):
            to_grid = o3.ToS2Grid(lmax, res, normalization="integral", dtype=torch.float64)
            eye = torch.eye((lmax + 1) ** 2, dtype=torch.float64)
            mats.append(to_grid(eye).reshape((lmax + 1) ** 2, -1))  # [i, beta*alpha]
        from_grid = o3.FromS2Grid(res, lmax_out, normalization="integral", dtype=torch.float64)
        n_grid = res[0] * res[1]
        deltas = torch.eye(n_grid, dtype=torch.float64).reshape(n_grid, res[0], res[1])
        mats.append(from_grid(deltas))  # [beta*alpha, out]
    finally:
        torch.set_default_dtype(previous)
    return mats


class GauntTensorProduct(torch.nn.Module):
    r"""``y = FromS2Grid(ToS2Grid(x1) * ToS2Grid(x2))``: the Gaunt tensor product.

    Inputs ``x1 [..., C, (lmax1+1)^2]`` and ``x2 [..., C, (lmax2+1)^2]`` (leading
    dims and the channel dim ``C`` broadcast; channels are multiplied channel by
    channel, e3nn's "uuu" mode), output ``[..., C, (lmax_out+1)^2]``, all in
    ``o3.Irreps.spherical_harmonics(l)`` layout. ``lmax_out`` defaults to
    ``lmax1 + lmax2``, the highest degree the product has. ``res=(res_beta,
    res_alpha)`` overrides :func:`grid_resolution` (only for testing: a
    coarser grid is not exact). Cost per channel: ``O(((L+1)^2) * n_grid)`` with
    ``n_grid = res_beta * res_alpha ~ (3L)^2``, against ``O(L^6)`` for the full
    Clebsch-Gordan product.
    """

    def __init__(
        self,
        lmax1: int,
        lmax2: int,
        lmax_out: Optional[int] = None,
        res: Optional[Tuple[int, int]] = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if lmax_out is None:
            lmax_out = lmax1 + lmax2
        if min(lmax1, lmax2, lmax_out) < 0:
            raise ValueError(f"degrees must be >= 0, got lmax1={lmax1}, lmax2={lmax2}, lmax_out={lmax_out}")
        self.lmax1, self.lmax2, self.lmax_out = lmax1, lmax2, lmax_out
        self.res = grid_resolution(lmax1, lmax2, lmax_out) if res is None else (int(res[0]), int(res[1]))
        self.irreps_in1 = o3.Irreps.spherical_harmonics(lmax1)
        self.irreps_in2 = o3.Irreps.spherical_harmonics(lmax2)
        self.irreps_out = o3.Irreps.spherical_harmonics(lmax_out)
        to_grid1, to_grid2, from_grid = _grid_matrices(lmax1, lmax2, lmax_out, self.res)
        self.register_buffer("to_grid1", to_grid1.to(dtype))
        self.register_buffer("to_grid2", to_grid2.to(dtype))
        self.register_buffer("from_grid", from_grid.to(dtype))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        f1 = torch.matmul(x1, self.to_grid1)  # values on the grid [..., C, n_grid]
        f2 = torch.matmul(x2, self.to_grid2)
        return torch.matmul(f1 * f2, self.from_grid)

    def extra_repr(self) -> str:
        return (f"lmax1={self.lmax1}, lmax2={self.lmax2}, lmax_out={self.lmax_out}, "
                f"res_beta x res_alpha={self.res[0]}x{self.res[1]}")
