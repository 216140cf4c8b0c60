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
    return exact_resolution(lmax1 + lmax2 + lmax_out, max(lmax1, lmax2, lmax_out))


def exact_resolution(degree: int, lmax: int) -> Tuple[int, int]:
    """(res_beta, res_alpha) of the coarsest e3nn grid that integrates degree ``degree`` exactly and holds ``lmax``."""
    res_beta = max(degree + 1 + (degree + 1) % 2, 2 * (lmax + 1))
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


def _float64_grid(build):
    """Run ``build`` with float64 as torch's default dtype.

    e3nn builds its quadrature weights in the default dtype, so the matrices
    are built under float64 to keep the product exact to ~1e-15 rather than ~1e-7.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return build()
    finally:
        torch.set_default_dtype(previous)


def to_grid_matrix(lmax: int, res: Tuple[int, int]) -> torch.Tensor:
    """Dense float64 matrix of e3nn's ``ToS2Grid(lmax, res, normalization="integral")``: ``[(lmax+1)^2, n_grid]``.

    ``x @ M`` are the values ``f(r_g) = sum_lm x_lm Y_lm(r_g)`` at the ``n_grid =
    res_beta * res_alpha`` grid points (beta-major).
    """
    def build():
        to_grid = o3.ToS2Grid(lmax, res, normalization="integral", dtype=torch.float64)
        return to_grid(torch.eye((lmax + 1) ** 2, dtype=torch.float64)).reshape((lmax + 1) ** 2, -1)
    return _float64_grid(build)


def from_grid_matrix(lmax: int, res: Tuple[int, int]) -> torch.Tensor:
    """Dense float64 matrix of e3nn's ``FromS2Grid(res, lmax, normalization="integral")``: ``[n_grid, (lmax+1)^2]``.

    ``f @ M`` is the quadrature of ``int f Y_lm dOmega`` from grid values.
    """
    def build():
        from_grid = o3.FromS2Grid(res, lmax, normalization="integral", dtype=torch.float64)
        n_grid = res[0] * res[1]
        return from_grid(torch.eye(n_grid, dtype=torch.float64).reshape(n_grid, res[0], res[1]))
    return _float64_grid(build)


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
        self.register_buffer("to_grid1", to_grid_matrix(lmax1, self.res).to(dtype))
        self.register_buffer("to_grid2", to_grid_matrix(lmax2, self.res).to(dtype))
        self.register_buffer("from_grid", from_grid_matrix(lmax_out, self.res).to(dtype))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        f1 = torch.matmul(x1, self.to_grid1)  # values on the grid [..., C, n_grid]
        f2 = torch.matmul(x2, self.to_grid2)
        return torch.matmul(f1 * f2, self.from_grid)

    def extra_repr(self) -> str:
        return (f"lmax1={self.lmax1}, lmax2={self.lmax2}, lmax_out={self.lmax_out}, "
                f"res_beta x res_alpha={self.res[0]}x{self.res[1]}")


def lebedev_26() -> Tuple[torch.Tensor, torch.Tensor]:
    """Lebedev's 26-point rule on the unit sphere, exact for polynomials of degree <= 7.

    Points (float64 ``[26, 3]``): the 6 octahedron vertices (weight 1/21), the
    12 edge midpoints ``(+-1, +-1, 0)/sqrt 2`` (4/105) and the 8 cube vertices
    ``(+-1, +-1, +-1)/sqrt 3`` (9/280); weights ``[26]`` sum to ``4 pi``.
    """
    points, weights = [], []
    for axis in range(3):
        for sign in (1.0, -1.0):
            p = [0.0, 0.0, 0.0]
            p[axis] = sign
            points.append(p)
            weights.append(1.0 / 21.0)
    for zero in range(3):
        for s1 in (1.0, -1.0):
            for s2 in (1.0, -1.0):
                p = [s1, s2]
                p.insert(zero, 0.0)
                points.append([c / 2.0 ** 0.5 for c in p])
                weights.append(4.0 / 105.0)
    for s1 in (1.0, -1.0):
        for s2 in (1.0, -1.0):
            for s3 in (1.0, -1.0):
                points.append([s / 3.0 ** 0.5 for s in (s1, s2, s3)])
                weights.append(9.0 / 280.0)
    weights_t = torch.tensor(weights, dtype=torch.float64)
    return torch.tensor(points, dtype=torch.float64), 4.0 * torch.pi * weights_t


def quadrature_grid_matrices(lmax: int, degree: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(T [(lmax+1)^2, G], P [G, (lmax+1)^2])`` in float64, "integral" harmonics, exact to ``degree``.

    ``x @ T`` evaluates ``sum_lm x_lm Y_lm`` at the grid points and ``f @ P`` is
    the quadrature of ``int f Y_lm dOmega``; the quadrature is exact for
    integrands of polynomial degree ``<= degree``. Uses Lebedev's 26 points
    when ``degree <= 7`` (a Gaunt product of degrees up to 2 needs degree 6),
    else e3nn's grid by :func:`grid_resolution` (56 points already for degree 6).
    """
    if degree <= 7:
        points, weights = lebedev_26()
        values = o3.spherical_harmonics(o3.Irreps.spherical_harmonics(lmax), points, normalize=True,
                                        normalization="integral")  # [G, K]
        return values.T.contiguous(), weights[:, None] * values
    res = exact_resolution(degree, lmax)
    return to_grid_matrix(lmax, res), from_grid_matrix(lmax, res)
