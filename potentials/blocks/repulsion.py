r"""Short-range repulsion priors added to a potential's learned energy (registry :data:`REPULSIONS`).

``"zbl"``: the Ziegler-Biersack-Littmark universal screened Coulomb pair energy,
switched off smoothly well inside bond lengths:

    E = sum_{i<j} V_ab(r_ij) S_ab(r_ij)                                      (eV, r in Å)
    V_ab(r) = k_e Z_a Z_b / r * phi(r / a_ab),    a_ab = 0.46850 / (Z_a^0.23 + Z_b^0.23) Å
    phi(x)  = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x} + 0.28022 e^{-0.40290 x} + 0.02817 e^{-0.20162 x}
    S(r)    = 1 - t^3 (10 - 15 t + 6 t^2),   t = clamp((r - r_in) / (r_out - r_in), 0, 1)

``k_e = e^2 / (4 pi eps0) = 14.3996 eV Å`` (CODATA 2018); ``0.46850 Å = 0.8854 a_0``
and ``phi``'s coefficients are the published ZBL constants. ``S`` is exactly 1
below ``r_in`` and 0 above ``r_out``, and its first and second derivatives vanish
at both ends, so the prior is C2. The radii are per species pair, fractions of the
sum of the covalent radii (Cordero et al., Dalton Trans. 2008):

    r_out = 0.70 (R_a + R_b),   r_in = 0.35 (R_a + R_b)

e.g. H-H 0.43 Å (bond 0.74), C-H 0.75 Å (1.09), C-C 1.06 Å (1.20 triple, 1.54 single),
O-H 0.69 Å (0.96), Cu-Cu 1.85 Å (dimer 2.22, bulk 2.55): zero at every equilibrium
bond, so the prior does not fight the data, and large where no data reaches (Cu-Cu
at 1.0 Å: 135 eV). Both radii are scaled down together if ``r_out`` would pass the
model's cutoff. ``V S`` is positive and decreasing, so the prior is repulsive at
every distance it touches. ``"none"`` adds nothing.

A prior maps ``(species index [N], edge_index [2,E], edge_vectors [E,3])`` of a full
neighbour list (both directions of every pair) to per-atom energies ``[N]``: each
directed edge carries half of its pair's energy.
"""

from typing import Dict, List, Type

import torch
from torch import Tensor

# e^2 / (4 pi eps0) in eV Å: e / (4 pi eps0 * 1 Å) in V, CODATA 2018 (e exact, eps0 = 8.8541878128e-12 F/m).
COULOMB_EV_A = 1.602176634e-19 / (4.0 * 3.141592653589793 * 8.8541878128e-12 * 1e-10)
# ZBL universal screening length 0.8854 a_0 (Å) and its exponent on Z.
ZBL_LENGTH_A = 0.46850
ZBL_EXPONENT = 0.23
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_DECAYS = (3.19980, 0.94229, 0.40290, 0.20162)
# Switch radii as fractions of the sum of the two covalent radii.
OUTER_FRACTION = 0.70
INNER_FRACTION = 0.35

# Covalent radii (Å) of Z = 1..96, Cordero et al., "Covalent radii revisited", Dalton Trans. 2008, 2832
# (sp3 C; low-spin Mn, Fe, Co). Index 0 is unused.
COVALENT_RADII_A = (
    0.0,
    0.31, 0.28,
    1.28, 0.96, 0.84, 0.76, 0.71, 0.66, 0.57, 0.58,
    1.66, 1.41, 1.21, 1.11, 1.07, 1.05, 1.02, 1.06,
    2.03, 1.76, 1.70, 1.60, 1.53, 1.39, 1.39, 1.32, 1.26, 1.24, 1.32, 1.22, 1.22, 1.20, 1.19, 1.20, 1.20, 1.16,
    2.20, 1.95, 1.90, 1.75, 1.64, 1.54, 1.47, 1.46, 1.42, 1.39, 1.45, 1.44, 1.42, 1.39, 1.39, 1.38, 1.39, 1.40,
    2.44, 2.15, 2.07, 2.04, 2.03, 2.01, 1.99, 1.98, 1.98, 1.96, 1.94, 1.92, 1.92, 1.89, 1.90, 1.87, 1.87,
    1.75, 1.70, 1.62, 1.51, 1.44, 1.41, 1.36, 1.36, 1.32, 1.45, 1.46, 1.48, 1.40, 1.50, 1.50,
    2.60, 2.21, 2.15, 2.06, 2.00, 1.96, 1.90, 1.87, 1.80, 1.69,
)


def smooth_switch(r: Tensor, inner: Tensor, outer: Tensor) -> Tensor:
    """``1 - t^3 (10 - 15 t + 6 t^2)``, ``t = clamp((r - inner) / (outer - inner), 0, 1)``: 1 below ``inner``,
    0 above ``outer``, with zero first and second derivatives at both."""
    t = ((r - inner) / (outer - inner)).clamp(0.0, 1.0)
    return 1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t)


def zbl_screening(x: Tensor, coefficients: Tensor, decays: Tensor) -> Tensor:
    """The ZBL universal screening function ``phi(x) = sum_k c_k exp(-d_k x)`` (dimensionless), with
    ``coefficients`` and ``decays`` the four ``c_k``, ``d_k`` (:data:`ZBL_COEFFICIENTS`, :data:`ZBL_DECAYS`)."""
    return (coefficients * torch.exp(-decays * x.unsqueeze(-1))).sum(dim=-1)


def covalent_radius(z: int) -> float:
    """Covalent radius (Å) of element ``z``; a ValueError for elements beyond the table (Z > 96)."""
    if not 1 <= z < len(COVALENT_RADII_A):
        raise ValueError(f"the zbl repulsion has no covalent radius for atomic number {z} (it knows Z = 1..96); "
                         "use repulsion = \"none\" for this model")
    return COVALENT_RADII_A[z]


class NoRepulsion(torch.nn.Module):
    """No prior: zero energy on every atom."""

    def __init__(self, species: List[int], cutoff: float):
        super().__init__()

    def forward(self, species: Tensor, edge_index: Tensor, edge_vectors: Tensor) -> Tensor:
        return torch.zeros(species.shape[0], dtype=edge_vectors.dtype, device=edge_vectors.device)


class ZBLRepulsion(torch.nn.Module):
    """The switched ZBL pair energy (see the module docstring).

    The per-species-pair tables ``[S, S]`` are plain float64 tensor attributes, not buffers,
    so ``.to(dtype)`` leaves them alone; each call casts them to the compute dtype and device.
    A model built in float32 and cast to float64 thus keeps its constants to float64 precision
    (in TorchScript too, where ``torch.tensor(list)`` would round them to float32).
    """

    def __init__(self, species: List[int], cutoff: float):
        super().__init__()
        self.n_species = len(species)
        charge: List[float] = []
        length: List[float] = []
        inner: List[float] = []
        outer: List[float] = []
        for za in species:
            for zb in species:
                radii = covalent_radius(int(za)) + covalent_radius(int(zb))
                shrink = min(1.0, float(cutoff) / (OUTER_FRACTION * radii))
                charge.append(COULOMB_EV_A * za * zb)  # k_e Z_a Z_b, eV Å
                length.append(ZBL_LENGTH_A / (za ** ZBL_EXPONENT + zb ** ZBL_EXPONENT))  # a_ab, Å
                inner.append(INNER_FRACTION * radii * shrink)  # r_in, Å
                outer.append(OUTER_FRACTION * radii * shrink)  # r_out, Å
        self.tables = torch.tensor([charge, length, inner, outer], dtype=torch.float64)  # [4, S*S]
        self.screening = torch.tensor([ZBL_COEFFICIENTS, ZBL_DECAYS], dtype=torch.float64)  # [2, 4]

    def forward(self, species: Tensor, edge_index: Tensor, edge_vectors: Tensor) -> Tensor:
        dtype = edge_vectors.dtype
        device = edge_vectors.device
        energies = torch.zeros(species.shape[0], dtype=dtype, device=device)
        tables = self.tables.to(device=device, dtype=dtype)
        screening = self.screening.to(device=device, dtype=dtype)
        r = torch.linalg.vector_norm(edge_vectors, dim=1)
        pair = species[edge_index[0]] * self.n_species + species[edge_index[1]]
        close = torch.nonzero(r < tables[3][pair]).squeeze(-1)
        r = r[close]
        values = tables[:, pair[close]]  # charge product, screening length, inner, outer per pair
        energy = (values[0] / r * zbl_screening(r / values[1], screening[0], screening[1])
                  * smooth_switch(r, values[2], values[3]))
        return energies.index_add(0, edge_index[0][close], 0.5 * energy)


# Repulsion priors by name (the ``repulsion`` option of every potential family).
REPULSIONS: Dict[str, Type[torch.nn.Module]] = {"none": NoRepulsion, "zbl": ZBLRepulsion}


def make_repulsion(name: str, species: List[int], cutoff: float) -> torch.nn.Module:
    """The prior registered as ``name`` for a model of ``species`` (atomic numbers) and ``cutoff`` (Å)."""
    if name not in REPULSIONS:
        raise ValueError(f"repulsion {name!r} is not one of {sorted(REPULSIONS)}")
    return REPULSIONS[name](species, cutoff)
