"""The true potential-energy surface of a search: energy (eV) and gradient (eV/Å) of the free atoms.

:class:`TrueSurface` maps flattened free coordinates ``x`` (Å) to full
positions, asks the ASE calculator, logs every call (energy, largest
per-atom gradient and kind: ``midpoint``, ``image``, ``dimer``, ``verify``
or ``failed``) and remembers the search point (not an image nor a
verification call) with the smallest gradient. A calculator that raises
``CalculationFailed`` (an SCF that does not converge) gives
:class:`EvaluationFailed`, which every method answers the same way: back to
the last good point with a shorter step (the trust region or the largest
step halves); after ``max_failures`` failures in a row the surface raises
:class:`TooManyFailures` instead and the search ends, not converged, with
that reason. NaN or infinite results are an :class:`~mlmd.errors.MLMDError`.
"""

import time
from typing import Dict, List, Optional

import numpy as np

from ..errors import MLMDError
from .dimer import max_atom_norm


class EvaluationFailed(Exception):
    """The potential could not be evaluated at a point (for example an SCF that did not converge)."""


class TooManyFailures(Exception):
    """The potential failed ``max_failures`` times in a row; the search stops with this reason."""


#: call kinds that are not points of the search itself (never kept as the best structure)
AUXILIARY_KINDS = ("image", "verify")


class TrueSurface:
    """Energy (eV) and gradient (eV/Å) of the free coordinates, with a call log in ``history``.

    ``first`` is ``(x, energy eV)`` of the first successful call (a
    method's start); ``failures``/``consecutive_failures`` count failed calls.
    """

    def __init__(self, atoms, calc, free, max_failures: Optional[int] = None):
        self.atoms = atoms.copy()
        self.atoms.calc = calc
        self.free = free
        self.base = atoms.positions.copy()
        self.history: List[Dict] = []
        self.seconds = 0.0
        self.best = None  # (fmax, x, energy, gradient) over evaluations that are search points
        self.max_failures = max_failures
        self.failures = 0
        self.consecutive_failures = 0
        self.first: Optional[tuple] = None  # (x, energy) of the first successful call

    @property
    def calls(self) -> int:
        """True evaluations so far, failed ones included."""
        return len(self.history)

    def count(self, *kinds: str) -> int:
        """Calls of the given kinds (``failed`` included when asked for)."""
        return sum(h["kind"] in kinds for h in self.history)

    def energy_at(self, x, kind: str) -> float:
        """Energy (eV) at ``x``: from the first call when it was there, else a new call of ``kind``."""
        if self.first is not None and np.array_equal(self.first[0], np.asarray(x, dtype=float)):
            return self.first[1]
        return self(x, kind=kind)[0]

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
            self.failures += 1
            self.consecutive_failures += 1
            if self.max_failures is not None and self.consecutive_failures >= self.max_failures:
                raise TooManyFailures(f"the potential failed {self.consecutive_failures} times in a row "
                                      f"(last: {exc})") from exc
            raise EvaluationFailed(str(exc)) from exc
        self.consecutive_failures = 0
        self.seconds += time.perf_counter() - start
        fmax = max_atom_norm(gradient)
        self.history.append({"call": self.calls + 1, "energy": energy, "fmax": fmax, "kind": kind})
        if not (np.isfinite(energy) and np.all(np.isfinite(gradient))):
            raise MLMDError(f"the potential returned NaN or infinite values at call {self.calls}; the search "
                            "left the region the potential handles: start closer to the saddle or use a smaller "
                            "--max-step")
        if self.first is None:
            self.first = (np.array(x, dtype=float), energy)
        if kind not in AUXILIARY_KINDS and (self.best is None or fmax < self.best[0]):
            self.best = (fmax, np.array(x, dtype=float), energy, gradient.copy())
        return energy, gradient
