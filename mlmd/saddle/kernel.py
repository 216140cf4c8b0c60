"""Kernel of the saddle-search GP: constant + squared exponential on inverse interatomic distances.

Coordinates ``x`` are the flattened Cartesian positions of the moving atoms
(Å, length D = 3 * moving atoms). They are mapped to features
``f_p(x) = 1 / r_p`` (1/Å), one per atom pair ``p`` that involves a moving
atom, with Jacobian ``J = df/dx`` (P x D). With ``u = (f - f') / l²`` and
``s = sum_p (f_p - f'_p)² / l_p²`` (one length scale ``l`` per pair of element
types, in 1/Å):

    k(x, x')            = sigma_c² + k_se,   k_se = sigma_f² exp(-s / 2)        (eV²)
    cov(E(x), G(x'))    = k_se  J'ᵀ u                                           (eV²/Å)
    cov(G(x), E(x'))    = -k_se Jᵀ u
    cov(G(x), G(x'))    = k_se  Jᵀ (diag(1/l²) - u uᵀ) J'                       (eV²/Å²)

All blocks are assembled for whole batches of configurations at once in torch
float64, so the same code runs on a GPU.  :class:`CartesianFeatures` (the
identity map, one length scale in Å) serves model surfaces with a single atom
such as Müller-Brown.
"""

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch

DTYPE = torch.float64


class InverseDistanceFeatures:
    """Inverse distances ``1/r`` (1/Å) of every pair that involves a moving atom.

    Periodic images are fixed when the object is built: the pairs are those
    within ``cutoff_A`` of each other in the starting structure (every pair
    in a non-periodic structure), each with its lattice shift, so the map is
    smooth in ``x``. Pairs between two fixed atoms are constant and left out.
    """

    def __init__(self, atoms, moving: np.ndarray, cutoff_A: float = 5.0, device="cpu"):
        self.device = torch.device(device)
        numbers = atoms.numbers
        self.moving = np.asarray(moving, dtype=np.int64)
        n_atoms = len(atoms)
        is_moving = np.zeros(n_atoms, dtype=bool)
        is_moving[self.moving] = True
        moving_index = -np.ones(n_atoms, dtype=np.int64)
        moving_index[self.moving] = np.arange(len(self.moving))
        if atoms.pbc.any():
            from ase.neighborlist import neighbor_list

            i, j, shift = neighbor_list("ijS", atoms, cutoff_A)
            shift_A = shift @ atoms.cell.array
            # each unordered pair once (ASE lists both directions); an atom's own images are at constant distance
            keep = (is_moving[i] | is_moving[j]) & (i < j)
            i, j, shift_A = i[keep], j[keep], shift_A[keep]
        else:
            i, j = np.triu_indices(n_atoms, k=1)
            keep = is_moving[i] | is_moving[j]
            i, j = i[keep], j[keep]
            shift_A = np.zeros((len(i), 3))
        if len(i) == 0:
            raise ValueError("no atom pairs involve a moving atom")
        pair_types = sorted({tuple(sorted((int(numbers[a]), int(numbers[b])))) for a, b in zip(i, j)})
        self.type_names: List[Tuple[int, int]] = pair_types
        lookup = {t: k for k, t in enumerate(pair_types)}
        self.pair_type = torch.tensor([lookup[tuple(sorted((int(numbers[a]), int(numbers[b]))))]
                                       for a, b in zip(i, j)], device=self.device)
        self.n_types = len(pair_types)
        self.i = torch.as_tensor(i, device=self.device)
        self.j = torch.as_tensor(j, device=self.device)
        self.shift = torch.as_tensor(shift_A, dtype=DTYPE, device=self.device)
        self.mi = torch.as_tensor(moving_index[i], device=self.device)
        self.mj = torch.as_tensor(moving_index[j], device=self.device)
        self.base = torch.as_tensor(atoms.positions, dtype=DTYPE, device=self.device)
        self.n_pairs = len(i)
        self.dim = 3 * len(self.moving)

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        """Full positions [B, n_atoms, 3] (Å) for moving coordinates ``x`` [B, D]."""
        pos = self.base.expand(x.shape[0], -1, -1).clone()
        pos[:, torch.as_tensor(self.moving, device=self.device)] = x.reshape(x.shape[0], -1, 3)
        return pos

    def __call__(self, x: torch.Tensor):
        """Features ``f`` [B, P] (1/Å) and Jacobian ``J`` [B, P, D] (1/Å²) for ``x`` [B, D] (Å)."""
        pos = self.positions(x)
        vec = pos[:, self.j] + self.shift - pos[:, self.i]  # r_j - r_i  [B, P, 3]
        r = torch.linalg.vector_norm(vec, dim=-1)
        f = 1.0 / r
        d = vec / r.unsqueeze(-1) ** 3  # d(1/r)/d r_i = +vec/r³, d(1/r)/d r_j = -vec/r³
        B, P = f.shape
        J = torch.zeros(B, P, len(self.moving), 3, dtype=DTYPE, device=self.device)
        p = torch.arange(P, device=self.device)
        on_i = self.mi >= 0
        on_j = self.mj >= 0
        J[:, p[on_i], self.mi[on_i]] += d[:, on_i]
        J[:, p[on_j], self.mj[on_j]] -= d[:, on_j]
        return f, J.reshape(B, P, -1)

    def log_distance_ratio(self, f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
        """max_p |log(r_p(a) / r_p(b))| for features [A, P] and [B, P] -> [A, B] (dimensionless)."""
        return (torch.log(f_a).unsqueeze(1) - torch.log(f_b).unsqueeze(0)).abs().amax(-1)

    def default_length_scales(self, f: torch.Tensor) -> torch.Tensor:
        """Initial length scale per pair type: half the mean inverse distance of that type (1/Å)."""
        mean = torch.zeros(self.n_types, dtype=DTYPE, device=self.device)
        mean.index_add_(0, self.pair_type, f.mean(0))
        count = torch.bincount(self.pair_type, minlength=self.n_types).to(DTYPE)
        return 0.5 * mean / count


class CartesianFeatures:
    """Identity features (Å) with one length scale: for one-atom model surfaces (Müller-Brown)."""

    def __init__(self, atoms, moving: np.ndarray, device="cpu"):
        self.device = torch.device(device)
        self.moving = np.asarray(moving, dtype=np.int64)
        self.dim = 3 * len(self.moving)
        self.n_pairs = self.dim
        self.n_types = 1
        self.type_names = [("x", "x")]
        self.pair_type = torch.zeros(self.dim, dtype=torch.int64, device=self.device)
        self.base = torch.as_tensor(atoms.positions, dtype=DTYPE, device=self.device)

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.base.expand(x.shape[0], -1, -1).clone()
        pos[:, torch.as_tensor(self.moving, device=self.device)] = x.reshape(x.shape[0], -1, 3)
        return pos

    def __call__(self, x: torch.Tensor):
        eye = torch.eye(self.dim, dtype=DTYPE, device=self.device)
        return x, eye.expand(x.shape[0], -1, -1)

    def log_distance_ratio(self, f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
        """Largest Cartesian component difference (Å), the stand-in when there are no atom pairs."""
        return (f_a.unsqueeze(1) - f_b.unsqueeze(0)).abs().amax(-1)

    def default_length_scales(self, f: torch.Tensor) -> torch.Tensor:
        return torch.full((1,), 0.5, dtype=DTYPE, device=self.device)


def make_features(atoms, moving: np.ndarray, cutoff_A: float = 5.0, device="cpu"):
    """Inverse-distance features when the system has atom pairs, else Cartesian ones."""
    if len(atoms) > 1:
        return InverseDistanceFeatures(atoms, moving, cutoff_A=cutoff_A, device=device)
    return CartesianFeatures(atoms, moving, device=device)


@dataclass
class Hyperparameters:
    """sigma_c² (eV², fixed), sigma_f² (eV²) and one length scale per pair type (1/Å, or Å for Cartesian)."""

    constant_var: torch.Tensor
    signal_var: torch.Tensor
    length_scales: torch.Tensor


def covariance(f1, J1, f2, J2, hyper: Hyperparameters, pair_type: torch.Tensor) -> torch.Tensor:
    """Joint covariance of [E, G] between two batches of configurations.

    ``f1`` [A, P], ``J1`` [A, P, D], ``f2`` [B, P], ``J2`` [B, P, D]. Returns the
    [A (1 + D), B (1 + D)] matrix ordered as all energies first, then every
    configuration's gradient (configuration-major, coordinate-minor).
    """
    A, P, D = J1.shape
    B = J2.shape[0]
    inv_l2 = 1.0 / hyper.length_scales[pair_type] ** 2  # [P]
    diff = f1.unsqueeze(1) - f2.unsqueeze(0)  # [A, B, P]
    u = diff * inv_l2
    k_se = hyper.signal_var * torch.exp(-0.5 * (diff * u).sum(-1))  # [A, B]
    EE = hyper.constant_var + k_se
    J1u = torch.einsum("abp,apd->abd", u, J1)  # J1ᵀ u  [A, B, D]
    J2u = torch.einsum("abp,bpd->abd", u, J2)  # J2ᵀ u  [A, B, D]
    EG = k_se.unsqueeze(-1) * J2u  # cov(E_a, G_b)  [A, B, D]
    GE = -k_se.unsqueeze(-1) * J1u  # cov(G_a, E_b)  [A, B, D]
    scaled1 = J1 * inv_l2[None, :, None]  # Λ⁻¹ J1
    gram = torch.einsum("apd,bpe->adbe", scaled1, J2)  # J1ᵀ Λ⁻¹ J2  [A, D, B, D]
    outer = torch.einsum("abd,abe->adbe", J1u, J2u)
    GG = k_se[:, None, :, None] * (gram - outer)
    top = torch.cat([EE, EG.reshape(A, B * D)], dim=1)
    bottom = torch.cat([GE.permute(0, 2, 1).reshape(A * D, B), GG.reshape(A * D, B * D)], dim=1)
    return torch.cat([top, bottom], dim=0)


class CovarianceCache:
    """Hyperparameter-independent sums for repeated :func:`covariance` calls on fixed data.

    Writing ``diff = f1_a - f2_b`` and ``Σ_t`` for the sum over pairs of type t:
    ``S_t = Σ_t diff²``, ``M1_t = Σ_t J1ᵀ diff``, ``M2_t = Σ_t J2ᵀ diff`` and
    ``W_t = Σ_t J1ᵀ J2`` do not depend on the hyperparameters, so each
    evaluation of the marginal likelihood costs O(T (A D)(B D)) instead of
    O(P (A D)(B D)) (T pair types, P pairs). Used for the hyperparameter fit.
    """

    def __init__(self, f1, J1, f2, J2, pair_type: torch.Tensor, n_types: int):
        A, P, D = J1.shape
        B = J2.shape[0]
        self.shape = (A, B, D)
        onehot = torch.nn.functional.one_hot(pair_type, n_types).to(J1.dtype)  # [P, T]
        diff = f1.unsqueeze(1) - f2.unsqueeze(0)  # [A, B, P]
        self.S = torch.einsum("abp,pt->tab", diff * diff, onehot)
        self.M1 = torch.einsum("abp,apd,pt->tabd", diff, J1, onehot)
        self.M2 = torch.einsum("abp,bpd,pt->tabd", diff, J2, onehot)
        self.W = torch.einsum("apd,bpe,pt->tadbe", J1, J2, onehot)

    @staticmethod
    def affordable(A: int, B: int, D: int, n_types: int, limit: int = 60_000_000) -> bool:
        """Whether the cache fits in ``limit`` float64 numbers."""
        return n_types * A * B * D * D <= limit

    def matrix(self, hyper: Hyperparameters) -> torch.Tensor:
        """The same matrix as :func:`covariance` for these data and ``hyper``."""
        A, B, D = self.shape
        inv_l2 = 1.0 / hyper.length_scales ** 2  # [T]
        k_se = hyper.signal_var * torch.exp(-0.5 * torch.einsum("tab,t->ab", self.S, inv_l2))
        J1u = torch.einsum("tabd,t->abd", self.M1, inv_l2)
        J2u = torch.einsum("tabd,t->abd", self.M2, inv_l2)
        EE = hyper.constant_var + k_se
        EG = k_se.unsqueeze(-1) * J2u
        GE = -k_se.unsqueeze(-1) * J1u
        gram = torch.einsum("tadbe,t->adbe", self.W, inv_l2)
        outer = torch.einsum("abd,abe->adbe", J1u, J2u)
        GG = k_se[:, None, :, None] * (gram - outer)
        top = torch.cat([EE, EG.reshape(A, B * D)], dim=1)
        bottom = torch.cat([GE.permute(0, 2, 1).reshape(A * D, B), GG.reshape(A * D, B * D)], dim=1)
        return torch.cat([top, bottom], dim=0)
