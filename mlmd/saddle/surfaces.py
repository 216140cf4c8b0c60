"""Model energy surfaces as small ASE calculators, for tests and the evaluation script.

- :class:`MullerBrown`: the Müller-Brown surface (Müller & Brown 1979) on the
  x, y coordinates (Å) of a single atom, times ``energy_scale`` (default 0.01,
  so that the lowest barrier is about 1 eV), plus ``½ k z²`` holding the atom
  in the plane. Known saddles: (-0.822, 0.624) and (0.212, 0.293).
- :class:`LEPS`: the London-Eyring-Polanyi-Sato surface for three H atoms
  A-B-C (atom order), with the parameters of Henkelman, Jóhannesson and
  Jónsson (2000): a = 0.05, b = 0.30, c = 0.05, d_AB = d_BC = 4.746 eV,
  d_AC = 3.445 eV, r0 = 0.742 Å, alpha = 1.942 1/Å. Rotation and translation
  invariant in 3D.

Energies and forces come from torch autograd of one energy expression.
"""

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

MB_A = (-200.0, -100.0, -170.0, 15.0)
MB_a = (-1.0, -1.0, -6.5, 0.7)
MB_b = (0.0, 0.0, 11.0, 0.6)
MB_c = (-10.0, -10.0, -6.5, 0.7)
MB_x0 = (1.0, 0.0, -0.5, -1.0)
MB_y0 = (0.0, 0.5, 1.5, 1.0)
#: (x, y) of the Müller-Brown minima and saddles, from the literature.
MB_MINIMA = ((-0.558, 1.442), (0.623, 0.028), (-0.050, 0.467))
MB_SADDLES = ((-0.822, 0.624), (0.212, 0.293))


class _TorchCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces"]

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        positions = torch.tensor(self.atoms.positions, dtype=torch.float64, requires_grad=True)
        energy = self.energy(positions)
        (gradient,) = torch.autograd.grad(energy, positions)
        energy = float(energy.detach())
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": -gradient.numpy().copy()}


class MullerBrown(_TorchCalculator):
    """Müller-Brown on atom 0's x, y (Å) in eV, times ``energy_scale``, plus ½ k z² (k in eV/Å²)."""

    def __init__(self, energy_scale: float = 0.01, z_spring_eV_per_A2: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.energy_scale = energy_scale
        self.z_spring = z_spring_eV_per_A2

    def energy(self, positions):
        x, y, z = positions[0]
        total = 0.0
        for A, a, b, c, x0, y0 in zip(MB_A, MB_a, MB_b, MB_c, MB_x0, MB_y0):
            dx, dy = x - x0, y - y0
            total = total + A * torch.exp(a * dx * dx + b * dx * dy + c * dy * dy)
        return self.energy_scale * total + 0.5 * self.z_spring * z * z


class LEPS(_TorchCalculator):
    """LEPS potential (eV) for three atoms A, B, C in that order (positions in Å)."""

    a, b, c = 0.05, 0.30, 0.05
    d_ab, d_bc, d_ac = 4.746, 4.746, 3.445
    r0, alpha = 0.742, 1.942

    def _qj(self, r, d):
        e1 = torch.exp(-self.alpha * (r - self.r0))
        q = 0.5 * d * (1.5 * e1 * e1 - e1)
        j = 0.25 * d * (e1 * e1 - 6 * e1)
        return q, j

    def energy(self, positions):
        r_ab = torch.linalg.vector_norm(positions[1] - positions[0])
        r_bc = torch.linalg.vector_norm(positions[2] - positions[1])
        r_ac = torch.linalg.vector_norm(positions[2] - positions[0])
        q_ab, j_ab = self._qj(r_ab, self.d_ab)
        q_bc, j_bc = self._qj(r_bc, self.d_bc)
        q_ac, j_ac = self._qj(r_ac, self.d_ac)
        a, b, c = 1 + self.a, 1 + self.b, 1 + self.c
        root = (j_ab ** 2 / a ** 2 + j_bc ** 2 / b ** 2 + j_ac ** 2 / c ** 2
                - j_ab * j_bc / (a * b) - j_bc * j_ac / (b * c) - j_ab * j_ac / (a * c))
        return q_ab / a + q_bc / b + q_ac / c - torch.sqrt(root)


def muller_brown_atoms(x: float = -0.558, y: float = 1.442):
    """One atom at (x, y, 0) carrying a :class:`MullerBrown` calculator."""
    from ase import Atoms

    atoms = Atoms("H", positions=[[x, y, 0.0]])
    atoms.calc = MullerBrown()
    return atoms


def leps_atoms(r_ab: float = 0.742, r_bc: float = 2.0):
    """Collinear H-H-H along x with the given distances (Å), carrying a :class:`LEPS` calculator."""
    from ase import Atoms

    atoms = Atoms("H3", positions=[[0, 0, 0], [r_ab, 0, 0], [r_ab + r_bc, 0, 0]])
    atoms.calc = LEPS()
    return atoms


def numerical_hessian(atoms, calculator=None, indices=None, step_A: float = 1e-4) -> np.ndarray:
    """Central-difference Hessian (eV/Å²) over ``indices``' coordinates (``calculator`` or the atoms' own)."""
    indices = np.arange(len(atoms)) if indices is None else np.asarray(indices)
    work = atoms.copy()
    work.calc = calculator if calculator is not None else atoms.calc
    base = work.positions.copy()
    n = 3 * len(indices)
    hessian = np.zeros((n, n))
    for k in range(n):
        a, d = indices[k // 3], k % 3
        grads = []
        for sign in (1, -1):
            pos = base.copy()
            pos[a, d] += sign * step_A
            work.positions = pos
            grads.append(-work.get_forces(apply_constraint=False)[indices].ravel())
        hessian[k] = (grads[0] - grads[1]) / (2 * step_A)
    work.positions = base
    return 0.5 * (hessian + hessian.T)


class CountingCalculator(Calculator):
    """Wraps an ASE calculator and counts its energy-and-force evaluations in ``calls``."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        work.calc = self.inner
        self.calls += 1
        energy = work.get_potential_energy()
        self.results = {"energy": energy, "free_energy": energy, "forces": work.get_forces(apply_constraint=False)}


def ase_dimer_search(atoms, calculator, mode: np.ndarray, fmax: float = 0.01, max_steps: int = 1000):
    """ASE's own dimer (``ase.mep.dimer``) from ``atoms`` along ``mode`` [n_atoms, 3], counting force calls.

    Returns ``(converged, force_calls, energy eV, atoms)``; FixAtoms constraints hold.
    """
    from ase.mep.dimer import DimerControl, MinModeAtoms, MinModeTranslate

    work = atoms.copy()
    counter = CountingCalculator(calculator)
    work.calc = counter
    control = DimerControl(initial_eigenmode_method="displacement", displacement_method="vector",
                           logfile=None, mask=None)
    dimer_atoms = MinModeAtoms(work, control, eigenmodes=[np.asarray(mode, dtype=float) / np.linalg.norm(mode)])
    optimizer = MinModeTranslate(dimer_atoms, logfile=None, trajectory=None)
    converged = bool(optimizer.run(fmax=fmax, steps=max_steps))
    energy = float(work.get_potential_energy())
    forces = work.get_forces()
    converged = converged and float(np.linalg.norm(forces, axis=1).max()) < fmax
    return converged, counter.calls, energy, work
