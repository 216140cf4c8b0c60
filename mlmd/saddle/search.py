"""Saddle-point search facade: :func:`search` (``mlmd.saddle.search``) and its result.

:func:`search` takes keyword arguments, builds a
:class:`~mlmd.saddle.settings.SaddleSettings` and calls
:func:`search_with_settings`, which validates the settings, prepares the start
(:mod:`mlmd.saddle.start`), runs the method registered under
``settings.method`` (:mod:`mlmd.saddle.methods`: ``gp-dimer``,
``ot-gp-dimer``, ``dimer``) on the true surface, and reports a
:class:`SaddleResult`: the confirmed saddle, or the evaluated structure with
the smallest gradient when the budget ran out. With ``relax`` it also relaxes
down both sides to the minima (:mod:`mlmd.saddle.relax`) and reports the
barrier. Energies in eV, forces in eV/Å, curvatures in eV/Å², lengths in Å.
"""

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import MLMDError
from .methods import METHODS, MethodOutcome
from .relax import relax_both_sides
from .settings import SaddleSettings
from .start import SearchStart, prepare_start, resolve_calculator
from .true_surface import EvaluationFailed, TrueSurface


@dataclass
class SaddleResult:
    """Outcome of a search. Energies in eV, curvature in eV/Å², mode a unit [n_atoms, 3] array."""

    atoms: object
    mode: np.ndarray
    converged: bool
    energy: float
    curvature: float
    fmax: float
    force_calls: int
    wall_s: float
    gp_s: float
    method: str
    message: str
    history: List[Dict] = field(default_factory=list)
    iterations: int = 0
    minima: Optional[List[Dict]] = None
    barrier: Optional[float] = None
    reverse_barrier: Optional[float] = None
    relax_calls: int = 0

    def summary(self) -> Dict:
        """The JSON summary: converged, energy, curvature, force_calls, wall_s, gp_s (+ barrier when relaxed)."""
        out = {
            "converged": bool(self.converged), "energy": float(self.energy), "curvature": float(self.curvature),
            "force_calls": int(self.force_calls), "wall_s": float(self.wall_s), "gp_s": float(self.gp_s),
            "fmax": float(self.fmax), "method": self.method, "iterations": int(self.iterations),
            "message": self.message,
        }
        if self.minima is not None:
            out["minima"] = self.minima
            out["barrier"] = self.barrier
            out["reverse_barrier"] = self.reverse_barrier
            out["relax_calls"] = int(self.relax_calls)
        return out


def search(atoms, calculator=None, model=None, method: str = "gp-dimer", mode: Union[str, np.ndarray] = "random",
           fmax: float = 0.01, max_calls: int = 200, fixed: Optional[Sequence[int]] = None,
           displace_A: float = 0.0, displace_atoms: Optional[Sequence[int]] = None, seed: int = 0,
           separation_A: float = 0.01, max_step_A: Optional[float] = None, relax: bool = False,
           device: str = "auto", prune: Optional[bool] = None, prune_size: int = 12, prune_newest: int = 4,
           trust_ratio: float = 0.2, trust_radius_A: float = 0.2, trust_min_A: float = 0.1,
           trust_max_A: float = 2.0, initial_rotations: Optional[int] = None, inner_iterations: int = 100,
           pair_cutoff_A: float = 5.0, min_distance_A: float = 0.5, min_negative_curvature: float = 1e-3,
           log: Optional[Callable[[str], None]] = None) -> SaddleResult:
    """Find a first-order saddle point near ``atoms`` and confirm it on the true surface.

    ``calculator``: an ASE calculator or a name for :func:`mlmd.calculators.get_calculator`;
    ``model``: an mlmd model (file, loaded model or module); else ``atoms.calc``.
    ``mode``: an [n_atoms, 3] or [n_free, 3] array, ``'random'`` or ``'displacement'``.
    ``displace_A``: standard deviation (Å) of a seeded Gaussian displacement of the free
    atoms (or of ``displace_atoms``) applied to the start. ``fmax`` (eV/Å) is the
    convergence threshold on the largest per-atom gradient; ``max_calls`` bounds the
    true evaluations of the search (relaxation calls are counted separately).
    ``initial_rotations``: GP rotations checked by true image evaluations before the first
    translation (default 5 for a random or displacement mode, 0 for a given mode). A saddle needs a
    curvature along the mode below ``-min_negative_curvature`` (eV/Å²), so flat regions do not count.
    The other settings are described in :class:`~mlmd.saddle.settings.SaddleSettings`; ``log``
    receives one progress line per iteration.
    """
    settings = SaddleSettings(
        method=method, mode=mode, fmax=fmax, max_calls=max_calls, fixed=fixed, displace_A=displace_A,
        displace_atoms=displace_atoms, seed=seed, separation_A=separation_A, max_step_A=max_step_A, relax=relax,
        device=device, prune=prune, prune_size=prune_size, prune_newest=prune_newest, trust_ratio=trust_ratio,
        trust_radius_A=trust_radius_A, trust_min_A=trust_min_A, trust_max_A=trust_max_A,
        initial_rotations=initial_rotations, inner_iterations=inner_iterations, pair_cutoff_A=pair_cutoff_A,
        min_distance_A=min_distance_A, min_negative_curvature=min_negative_curvature)
    return search_with_settings(atoms, settings, calculator=calculator, model=model, log=log)


def search_with_settings(atoms, settings: SaddleSettings, calculator=None, model=None,
                         log: Optional[Callable[[str], None]] = None) -> SaddleResult:
    """Run the search that ``settings`` describe from ``atoms`` (see :func:`search` for the potential)."""
    wall_start = time.perf_counter()
    settings.validate()
    method = METHODS[settings.method]
    settings = method.resolve(settings)
    start = prepare_start(atoms, settings)
    calc = resolve_calculator(calculator, model, device="cpu" if settings.device == "auto" else settings.device,
                              atoms=atoms)
    surface = TrueSurface(start.atoms, calc, start.free)
    say = log or (lambda text: None)
    try:
        outcome = method.run(start, surface, settings, say)
    except EvaluationFailed as exc:
        raise MLMDError(f"the potential could not be evaluated during the search ({exc}) after "
                        f"{surface.calls} calls; check the start structure and the potential's settings") from exc
    result = _result(surface, start, outcome, settings, wall_start)
    if settings.relax and result.converged:
        relax_both_sides(result, calc, start.atoms, start.free, start.x0, settings.fmax)
    result.wall_s = time.perf_counter() - wall_start
    return result


def _result(surface: TrueSurface, start: SearchStart, outcome: MethodOutcome, settings: SaddleSettings,
            wall_start: float) -> SaddleResult:
    """The confirmed saddle, or the non-image evaluation with the smallest gradient when not converged."""
    x = outcome.x
    if outcome.converged:
        energy, fmax_final = outcome.energy, outcome.fmax
        message = f"converged: saddle confirmed (fmax below {settings.fmax} eV/Å, negative curvature along the mode)"
    else:
        if surface.best is not None:
            fmax_final, x, energy, _ = surface.best
        else:
            energy, fmax_final = float("nan"), float("nan")
        message = (f"not converged within {surface.calls} force calls; kept the structure with the smallest "
                   f"gradient (fmax {fmax_final:.4f} eV/Å): raise --max-calls or start closer to the saddle")
    atoms = start.atoms.copy()
    atoms.positions = surface.positions(x)
    mode = np.zeros((len(atoms), 3))
    mode[start.free] = np.asarray(outcome.mode).reshape(-1, 3)
    return SaddleResult(atoms=atoms, mode=mode, converged=outcome.converged, energy=energy,
                        curvature=outcome.curvature, fmax=fmax_final, force_calls=surface.calls,
                        wall_s=time.perf_counter() - wall_start, gp_s=outcome.gp_s, method=settings.method,
                        message=message, history=surface.history, iterations=outcome.iterations)
