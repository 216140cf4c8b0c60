"""Coordinates for P-RFO: redundant internal coordinates of a molecule, and Cartesian ones.

Primitives of :class:`InternalCoordinates`, chosen once from the start geometry
(:func:`build_primitives`):

- bonds (Å): pairs closer than 1.25 x the sum of ASE's covalent radii; while
  the bonded graph has several fragments, the shortest pair between two of
  them is added (an inter-fragment link), until the graph is connected;
- angles (rad) ``a-b-c`` for every two bonds sharing ``b``; an angle above
  175° at the start is replaced by a linear-bend pair ``q_w = w·(u × v)``
  (``u``, ``v`` unit vectors from ``b`` to ``a`` and ``c``; ``w`` two fixed
  unit vectors perpendicular to the ``a-c`` axis and to each other);
- proper dihedrals (rad) ``i-j-k-l`` about every bond ``j-k``, skipped when
  the angle ``i-j-k`` or ``j-k-l`` is above 175°.

With the Wilson matrix ``B = ∂q/∂x`` (analytic), ``G = B Bᵀ``, its generalised
inverse ``G⁻`` (eigenvalues below 1e-8 x the largest dropped) and the
projector ``P = G G⁻`` onto the internal displacements a Cartesian step can
make:

    g_q = G⁻ B g_x,    H_q = G⁻ B (H_x - K) Bᵀ G⁻,    K = Σ_i (g_q)_i ∂²q_i/∂x²

(the K term is included, from central differences of the analytic B). An
internal step Δq goes back to Cartesian by Newton iterations ``x ← x + Bᵀ G⁻
(q₀ + Δq - q(x))`` with B at the current ``x`` (dihedral differences wrapped
into (-π, π]) until no coordinate moves by more than 1e-6 Å; when they fail
(25 iterations, or a residual that grows) the first-order step ``x₀ + Bᵀ G⁻
Δq`` is taken. When an angle straightens beyond 175° during a search
(:meth:`InternalCoordinates.degenerate`) the primitives are chosen afresh
at that geometry. :class:`CartesianCoordinates` is the same interface with
``q = x`` and ``B`` the projector that removes rigid motions.
"""

from dataclasses import dataclass

import numpy as np

#: pairs closer than this x the sum of covalent radii are bonds
BOND_FACTOR = 1.25
#: degrees: an angle above this is linear (linear-bend pair, no dihedrals through it)
LINEAR_DEG = 175.0
#: eigenvalues of G below this fraction of the largest are treated as zero
PSEUDO_INVERSE_RTOL = 1e-8
#: Newton iterations and tolerance (Å) of the back-transformation
BACK_ITERATIONS = 25
BACK_TOLERANCE_A = 1e-6
#: Å: step of the central differences of B that give the K term
K_STEP_A = 1e-4


@dataclass(frozen=True)
class Frame:
    """Transforms at one geometry: ``B`` [m, n], ``G⁻`` [m, m], ``P = G G⁻`` [m, m], ``B⁺ = Bᵀ G⁻`` [n, m]."""

    B: np.ndarray
    Ginv: np.ndarray
    P: np.ndarray
    Binv: np.ndarray


class Coordinates:
    """Shared transforms; subclasses give ``values(x)``, ``wilson(x)`` and ``difference(q1, q0)``."""

    kind = ""
    linear = False  # B does not depend on x (no K term, exact one-step back-transformation)

    def frame(self, x) -> Frame:
        B = self.wilson(x)
        w, V = np.linalg.eigh(B @ B.T)
        keep = w > PSEUDO_INVERSE_RTOL * max(float(w.max()), 1e-300)
        V = V[:, keep]
        Ginv = (V / w[keep]) @ V.T
        return Frame(B, Ginv, V @ V.T, B.T @ Ginv)

    def gradient(self, x, g_x, frame=None) -> np.ndarray:
        """``g_q = G⁻ B g_x`` (eV per Å or rad)."""
        frame = frame or self.frame(x)
        return frame.Ginv @ (frame.B @ g_x)

    def hessian(self, x, H_x, g_x, frame=None) -> np.ndarray:
        """``H_q = G⁻ B (H_x - K) Bᵀ G⁻`` from the Cartesian Hessian (eV/Å²) and gradient (eV/Å) at ``x``."""
        frame = frame or self.frame(x)
        H = np.asarray(H_x, dtype=float)
        if not self.linear:
            H = H - self.curvature_term(x, self.gradient(x, g_x, frame))
        return frame.Binv.T @ H @ frame.Binv

    def cartesian_hessian(self, x, H_q, g_x, frame=None) -> np.ndarray:
        """``H_x = Bᵀ H_q B + K``: the Cartesian Hessian (eV/Å²) that :meth:`hessian` maps to ``H_q``."""
        frame = frame or self.frame(x)
        H = frame.B.T @ H_q @ frame.B
        return H if self.linear else H + self.curvature_term(x, self.gradient(x, g_x, frame))

    def degenerate(self, x) -> bool:
        """Whether the primitives have become singular at ``x`` (always False here)."""
        return False

    def curvature_term(self, x, g_q) -> np.ndarray:
        """``K = Σ_i (g_q)_i ∂²q_i/∂x²`` [n, n] by central differences of ``Bᵀ g_q``."""
        n = len(x)
        K = np.zeros((n, n))
        for j in range(n):
            e = np.zeros(n)
            e[j] = K_STEP_A
            K[:, j] = (self.wilson(x + e).T @ g_q - self.wilson(x - e).T @ g_q) / (2 * K_STEP_A)
        return 0.5 * (K + K.T)

    def to_cartesian(self, x, dq, frame=None):
        """``(x_new, exact)``: Cartesian point whose coordinates are ``q(x) + dq``; ``exact`` False when the
        Newton iterations failed and the first-order step was taken instead."""
        frame = frame or self.frame(x)
        first_order = x + frame.Binv @ dq
        if self.linear:
            return first_order, True
        target = self.values(x) + dq
        y, residual = np.array(x, dtype=float), np.inf
        for _ in range(BACK_ITERATIONS):
            delta = self.difference(target, self.values(y))
            norm = float(np.linalg.norm(delta))
            if norm > residual * 1.5 or not np.isfinite(norm):
                break
            residual = norm
            change = self.frame(y).Binv @ delta
            y = y + change
            if np.abs(change).max() < BACK_TOLERANCE_A:
                return y, True
        return first_order, False

    def vector(self, x, v_x, frame=None) -> np.ndarray:
        """Internal image ``B v`` of a Cartesian direction ``v`` (unnormalised)."""
        frame = frame or self.frame(x)
        return frame.B @ v_x


class CartesianCoordinates(Coordinates):
    """``q = x``, ``B`` = the projector that removes the rigid motions in ``rigid`` (orthonormal rows) or I."""

    kind = "cartesian"
    linear = True

    def __init__(self, n: int, rigid=None):
        self.projector = np.eye(n) - (rigid.T @ rigid if rigid is not None and len(rigid) else 0.0)

    def values(self, x):
        return np.asarray(x, dtype=float)

    def wilson(self, x):
        return self.projector

    def difference(self, q1, q0):
        return q1 - q0

    def frame(self, x) -> Frame:
        P = self.projector
        return Frame(P, P, P, P)


def covalent_bonds(numbers, positions, factor: float = BOND_FACTOR):
    """Bonded pairs ``(i, j)``, ``i < j``, plus the shortest links that connect the fragments."""
    from ase.data import covalent_radii
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(positions)
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    limit = factor * (covalent_radii[numbers][:, None] + covalent_radii[numbers][None])
    bonds = [(i, j) for i in range(n) for j in range(i + 1, n) if d[i, j] < limit[i, j]]
    while n > 1:
        rows, cols = (np.array([b[k] for b in bonds], dtype=int) for k in (0, 1))
        count, labels = connected_components(coo_matrix((np.ones(len(bonds)), (rows, cols)), shape=(n, n)),
                                             directed=False)
        if count == 1:
            break
        between = np.where(labels[:, None] != labels[None], d, np.inf)
        i, j = np.unravel_index(int(np.argmin(between)), between.shape)
        bonds.append((min(i, j), max(i, j)))
    return bonds


def _angle_deg(p, a, b, c) -> float:
    u, v = p[a] - p[b], p[c] - p[b]
    return float(np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1.0, 1.0))))


def _perpendicular_pair(axis):
    axis = axis / np.linalg.norm(axis)
    trial = np.eye(3)[int(np.argmin(np.abs(axis)))]
    w1 = np.cross(axis, trial)
    w1 /= np.linalg.norm(w1)
    return w1, np.cross(axis, w1)


@dataclass
class Primitives:
    """Index arrays: ``bonds`` [k, 2], ``angles`` [k, 3] (a, b, c; b the apex), ``linear`` [k, 3] with unit
    ``linear_axes`` [k, 3] (one row per bend of a pair), ``dihedrals`` [k, 4]."""

    bonds: np.ndarray
    angles: np.ndarray
    linear: np.ndarray
    linear_axes: np.ndarray
    dihedrals: np.ndarray

    def __len__(self) -> int:
        return len(self.bonds) + len(self.angles) + len(self.linear) + len(self.dihedrals)


def build_primitives(numbers, positions) -> Primitives:
    """Bonds, angles (or linear-bend pairs) and proper dihedrals of the molecule at ``positions`` (Å)."""
    p = np.asarray(positions, dtype=float)
    bonds = covalent_bonds(np.asarray(numbers), p)
    neighbours = {i: sorted({j for b in bonds for j in b if i in b} - {i}) for i in range(len(p))}
    angles, linear, axes, straight = [], [], [], set()
    for b in range(len(p)):
        for k, a in enumerate(neighbours[b]):
            for c in neighbours[b][k + 1:]:
                if _angle_deg(p, a, b, c) > LINEAR_DEG:
                    for w in _perpendicular_pair(p[c] - p[a]):
                        linear.append((a, b, c))
                        axes.append(w)
                    straight.update({(a, b, c), (c, b, a)})
                else:
                    angles.append((a, b, c))
    dihedrals = []
    for j, k in bonds:
        for i in neighbours[j]:
            for m in neighbours[k]:
                if len({i, j, k, m}) == 4 and (i, j, k) not in straight and (j, k, m) not in straight:
                    dihedrals.append((i, j, k, m))
    return Primitives(np.array(bonds, dtype=int).reshape(-1, 2), np.array(angles, dtype=int).reshape(-1, 3),
                      np.array(linear, dtype=int).reshape(-1, 3), np.array(axes, dtype=float).reshape(-1, 3),
                      np.array(dihedrals, dtype=int).reshape(-1, 4))


def _units(vectors):
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / norms, norms


class InternalCoordinates(Coordinates):
    """Redundant internal coordinates of a molecule whose every atom is free (``x`` = all positions, Å)."""

    kind = "internal"

    def __init__(self, primitives: Primitives):
        self.primitives = primitives
        self.n_dihedrals = len(primitives.dihedrals)

    @classmethod
    def from_atoms(cls, numbers, positions) -> "InternalCoordinates":
        return cls(build_primitives(numbers, positions))

    def degenerate(self, x) -> bool:
        """Whether an angle, or an angle a dihedral passes through, has straightened beyond 175° at ``x``."""
        p = np.asarray(x, dtype=float).reshape(-1, 3)
        triples = [tuple(t) for t in self.primitives.angles]
        triples += [tuple(d[:3]) for d in self.primitives.dihedrals] + [tuple(d[1:]) for d in self.primitives.dihedrals]
        return any(_angle_deg(p, *t) > LINEAR_DEG for t in triples)

    def difference(self, q1, q0):
        """``q1 - q0`` with dihedral differences wrapped into (-π, π]."""
        d = np.asarray(q1, dtype=float) - q0
        if self.n_dihedrals:
            d[-self.n_dihedrals:] = (d[-self.n_dihedrals:] + np.pi) % (2 * np.pi) - np.pi
        return d

    def values(self, x) -> np.ndarray:
        return self._evaluate(x, derivatives=False)

    def wilson(self, x) -> np.ndarray:
        """``B = ∂q/∂x`` [m, 3N] (1 for bonds; 1/Å for angles, bends, dihedrals)."""
        return self._evaluate(x, derivatives=True)

    def _evaluate(self, x, derivatives: bool):
        pr = self.primitives
        p = np.asarray(x, dtype=float).reshape(-1, 3)
        blocks = []  # (values [k], [(atom index array [k], derivative [k, 3]), ...])
        i, j = pr.bonds.T
        e, r = _units(p[j] - p[i])
        blocks.append((r[:, 0], [(i, -e), (j, e)]))
        a, b, c = pr.angles.T
        u, ru = _units(p[a] - p[b])
        v, rv = _units(p[c] - p[b])
        cos = np.clip((u * v).sum(-1, keepdims=True), -1.0, 1.0)
        sin = np.maximum(np.sqrt(1.0 - cos ** 2), 1e-8)
        da, dc = (cos * u - v) / (ru * sin), (cos * v - u) / (rv * sin)
        blocks.append((np.arccos(cos[:, 0]), [(a, da), (b, -da - dc), (c, dc)]))
        a, b, c = pr.linear.T
        w = pr.linear_axes
        u, ru = _units(p[a] - p[b])
        v, rv = _units(p[c] - p[b])
        vw, wu = np.cross(v, w), np.cross(w, u)
        da = (vw - (u * vw).sum(-1, keepdims=True) * u) / ru
        dc = (wu - (v * wu).sum(-1, keepdims=True) * v) / rv
        blocks.append(((np.cross(u, v) * w).sum(-1), [(a, da), (b, -da - dc), (c, dc)]))
        i, j, k, m = pr.dihedrals.T
        b1, b2, b3 = p[j] - p[i], p[k] - p[j], p[m] - p[k]
        n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
        r2 = np.linalg.norm(b2, axis=-1, keepdims=True)
        phi = np.arctan2(r2[:, 0] * (b1 * n2).sum(-1), (n1 * n2).sum(-1))
        di = -r2 * n1 / np.maximum((n1 * n1).sum(-1, keepdims=True), 1e-16)
        dm = r2 * n2 / np.maximum((n2 * n2).sum(-1, keepdims=True), 1e-16)
        f1, f3 = (b1 * b2).sum(-1, keepdims=True) / r2 ** 2, (b3 * b2).sum(-1, keepdims=True) / r2 ** 2
        dj = f3 * dm - (1 + f1) * di
        blocks.append((phi, [(i, di), (j, dj), (k, -di - dj - dm), (m, dm)]))
        if not derivatives:
            return np.concatenate([values for values, _ in blocks])
        B = np.zeros((len(pr), p.size))
        row = 0
        for values, parts in blocks:
            rows = row + np.arange(len(values))
            for atoms, d in parts:
                for axis in range(3):
                    np.add.at(B, (rows, 3 * atoms + axis), d[:, axis])
            row += len(values)
        return B
