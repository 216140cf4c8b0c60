"""The true potential-energy surface of a search: energy (eV) and gradient (eV/Å) of the free atoms.

:class:`TrueSurface` maps flattened free coordinates ``x`` (Å) to full
positions, asks the ASE calculator, logs every call (energy, largest
per-atom gradient and kind: ``midpoint``, ``image``, ``dimer`` or
``failed``) and remembers the non-image point with the smallest gradient.
A calculator that raises ``CalculationFailed`` (an SCF that does not
converge) gives :class:`EvaluationFailed`; NaN or infinite results are an
:class:`~mlmd.errors.MLMDError`.
"""

import time
from typing import Dict, List

import numpy as np

from ..errors import MLMDError
from .dimer import max_atom_norm


class EvaluationFailed(Exception):
    """The potential could not be evaluated at a point (for example an SCF that did not converge)."""


class TrueSurface:
    """Energy (eV) and gradient (eV/Å) of the free coordinates, with a call log in ``history``."""

    def __init__(self, atoms, calc, free):
        self.atoms = atoms.copy()
        self.atoms.calc = calc
        self.free = free
        self.base = atoms.positions.copy()
        self.history: List[Dict] = []
        self.seconds = 0.0
        self.best = None  # (fmax, x, energy, gradient) over evaluations that are not dimer images

    @property
    def calls(self) -> int:
        """True evaluations so far, failed ones included."""
        return len(self.history)

    @property
    def calculator(self):
        return self.atoms.calc

    def positions(self, x) -> np.ndarray:
        """Full [n_atoms, 3] positions (Å) with the free atoms at ``x``."""
        pos = self.base.copy()
        pos[self.free] = np.asarray(x).reshape(-1, 3)
        return pos

    def __call__(self, x, kind: str = "midpoint"):
        """``(energy eV, gradient eV/Å over the free coordinates)`` at ``x``; logged as ``kind``."""
        from ase.calculators.calculator import CalculationFailed

        start = time.perf_counter()
        self.atoms.positions = self.positions(x)
        try:
            energy = float(self.atoms.get_potential_energy())
            gradient = -self.atoms.get_forces()[self.free].ravel()
        except CalculationFailed as exc:
            self.seconds += time.perf_counter() - start
            self.history.append({"call": self.calls + 1, "energy": float("nan"), "fmax": float("nan"),
                                 "kind": "failed"})
            raise EvaluationFailed(str(exc)) from exc
        self.seconds += time.perf_counter() - start
        fmax = max_atom_norm(gradient)
        self.history.append({"call": self.calls + 1, "energy": energy, "fmax": fmax, "kind": kind})
        if not (np.isfinite(energy) and np.all(np.isfinite(gradient))):
            raise MLMDError(f"the potential returned NaN or infinite values at call {self.calls}; the search "
                            "left the region the potential handles: start closer to the saddle or use a smaller "
                            "--max-step")
        if kind != "image" and (self.best is None or fmax < self.best[0]):
            self.best = (fmax, np.array(x, dtype=float), energy, gradient.copy())
        return energy, gradient
