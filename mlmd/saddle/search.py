"""Saddle-point search facade: :func:`search` (``mlmd.saddle.search``) and its result.

:func:`search` takes keyword arguments, builds a
:class:`~mlmd.saddle.settings.SaddleSettings` and calls
:func:`search_with_settings`, which validates the settings, prepares the start
(:mod:`mlmd.saddle.start`), runs the method registered under
``settings.method`` (:mod:`mlmd.saddle.methods`: ``gp-dimer``,
``ot-gp-dimer``, ``dimer``) on the true surface, and reports a
:class:`SaddleResult`: the confirmed saddle, or the evaluated structure with
the smallest gradient when the budget ran out. A converged end point is then
verified (:mod:`mlmd.saddle.verify`: Hessian index, fragmentation, bond
stretch, energy above the start, distance moved, overlap with the requested
mode); when a check fails the status is ``unverified`` and the message names
why. With ``relax`` it also relaxes down both sides to the minima
(:mod:`mlmd.saddle.relax`), reports the barrier and, when verifying, checks
that one side reaches the minimum the start relaxes to. Energies in eV, forces in
eV/Å, curvatures in eV/Å², lengths in Å.
"""

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import MLMDError
from .gp_dimer import resolve_torch_device
from .methods import AUTO, METHODS, MethodOutcome, auto_method
from .relax import relax_both_sides, relax_from
from .settings import SaddleSettings
from .start import SearchStart, prepare_start, resolve_calculator
from .true_surface import EvaluationFailed, TooManyFailures, TrueSurface
from .verify import Verification, connection_check, rigid_motions, verify_saddle

#: exit status of ``mlmd saddle`` per result status
EXIT_STATUS = {"verified": 0, "converged": 0, "not-converged": 1, "unverified": 3}


@dataclass
class SaddleResult:
    """Outcome of a search. Energies in eV, curvature in eV/Å², mode a unit [n_atoms, 3] array.

    ``converged``: the method's own test passed (small gradient, negative
    curvature along the mode); ``verification``: the checks of
    :mod:`mlmd.saddle.verify` (None when not converged or ``verify=False``);
    ``status``: ``verified``, ``unverified`` (converged but a check failed),
    ``converged`` (not verified, verification off) or ``not-converged``.
    ``force_calls`` counts the search's true calls, ``verify_calls`` those of
    the verification.
    """

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
    verification: Optional[Verification] = None

    @property
    def verified(self) -> Optional[bool]:
        """Whether every verification check passed (None when not verified)."""
        return None if self.verification is None else self.verification.verified

    @property
    def verify_calls(self) -> int:
        return 0 if self.verification is None else self.verification.calls

    @property
    def status(self) -> str:
        if not self.converged:
            return "not-converged"
        if self.verification is None:
            return "converged"
        return "verified" if self.verification.verified else "unverified"

    @property
    def warnings(self) -> List[str]:
        """One line per failed verification check, fatal or not: ``warning: NAME: detail``."""
        if self.verification is None:
            return []
        return [f"warning: {c.name}: {c.detail}" for c in self.verification.warned]

    def summary(self) -> Dict:
        """The JSON summary: status, converged, verified, energy, curvature, force_calls, verify_calls, wall_s,
        gp_s, the verification checks (+ barrier when relaxed)."""
        out = {
            "status": self.status, "converged": bool(self.converged), "verified": self.verified,
            "energy": float(self.energy), "curvature": float(self.curvature),
            "force_calls": int(self.force_calls), "wall_s": float(self.wall_s), "gp_s": float(self.gp_s),
            "fmax": float(self.fmax), "method": self.method, "iterations": int(self.iterations),
            "message": self.message, "verify_calls": int(self.verify_calls), "warnings": self.warnings,
        }
        if self.verification is not None:
            out["verification"] = self.verification.summary()
        if self.minima is not None:
            out["minima"] = self.minima
            out["barrier"] = self.barrier
            out["reverse_barrier"] = self.reverse_barrier
            out["relax_calls"] = int(self.relax_calls)
        return out


def search(atoms, calculator=None, model=None, method: str = "auto", mode: Union[str, np.ndarray] = "random",
           fmax: float = 0.01, max_calls: int = SaddleSettings.max_calls, fixed: Optional[Sequence[int]] = None,
           displace_A: float = 0.0, displace_atoms: Optional[Sequence[int]] = None, seed: int = 0,
           separation_A: float = 0.01, max_step_A: Optional[float] = None, relax: bool = False,
           product=None, device: str = "auto", prune: Optional[bool] = None, prune_size: int = 12,
           prune_newest: int = 4,
           trust_ratio: float = 0.2, trust_radius_A: float = 0.2, trust_min_A: float = 0.1,
           trust_max_A: float = 2.0, initial_rotations: Optional[int] = None, inner_iterations: int = 100,
           pair_cutoff_A: float = 5.0, min_distance_A: float = 0.5, min_negative_curvature: float = 1e-3,
           log: Optional[Callable[[str], None]] = None, **verification) -> SaddleResult:
    """Find a first-order saddle point near ``atoms`` and confirm it on the true surface.

    ``calculator``: an ASE calculator or a name for :func:`mlmd.calculators.get_calculator`;
    ``model``: an mlmd model (file, loaded model or module); else ``atoms.calc``.
    ``mode``: an [n_atoms, 3] or [n_free, 3] array, ``'random'`` or ``'displacement'``.
    ``displace_A``: standard deviation (Å) of a seeded Gaussian displacement of the free
    atoms (or of ``displace_atoms``) applied to the start. ``fmax`` (eV/Å) is the
    convergence threshold on the largest per-atom gradient; ``max_calls`` bounds the
    true evaluations of the search (relaxation calls are counted separately). ``relax``: relax
    down both sides of the saddle and check that one side reaches the start's minimum;
    ``product`` (Atoms or [n_atoms, 3] positions, Å): the intended end state, which implies
    ``relax`` and also requires the other side to reach it.
    ``initial_rotations``: GP rotations checked by true image evaluations before the first
    translation (default 5 for a random or displacement mode, 0 for a given mode). A saddle needs a
    curvature along the mode below ``-min_negative_curvature`` (eV/Å²), so flat regions do not count.
    The other settings, ``max_failures`` and the verification thresholds (``verify``,
    ``max_barrier_eV``, ...) given as keywords, are described in
    :class:`~mlmd.saddle.settings.SaddleSettings`; ``log`` receives one progress line per iteration.
    """
    settings = SaddleSettings(
        method=method, mode=mode, fmax=fmax, max_calls=max_calls, fixed=fixed, displace_A=displace_A,
        displace_atoms=displace_atoms, seed=seed, separation_A=separation_A, max_step_A=max_step_A, relax=relax,
        product=None if product is None else np.asarray(getattr(product, "positions", product), dtype=float),
        device=device, prune=prune, prune_size=prune_size, prune_newest=prune_newest, trust_ratio=trust_ratio,
        trust_radius_A=trust_radius_A, trust_min_A=trust_min_A, trust_max_A=trust_max_A,
        initial_rotations=initial_rotations, inner_iterations=inner_iterations, pair_cutoff_A=pair_cutoff_A,
        min_distance_A=min_distance_A, min_negative_curvature=min_negative_curvature, **verification)
    return search_with_settings(atoms, settings, calculator=calculator, model=model, log=log)


def _product_coordinates(product, start) -> np.ndarray:
    """The free coordinates of the intended product (positions [n_atoms, 3], Å), checked against the start."""
    product = np.asarray(product, dtype=float)
    if product.shape != start.atoms.positions.shape:
        raise MLMDError(f"the product has {len(product)} atoms and the start {len(start.atoms)}: give the same "
                        "structure after the reaction, with the atoms in the same order")
    return product[start.free].ravel()


def search_with_settings(atoms, settings: SaddleSettings, calculator=None, model=None,
                         log: Optional[Callable[[str], None]] = None) -> SaddleResult:
    """Run the search that ``settings`` describe from ``atoms`` (see :func:`search` for the potential)."""
    wall_start = time.perf_counter()
    settings.validate()
    start = prepare_start(atoms, settings)
    x_product = None if settings.product is None else _product_coordinates(settings.product, start)
    if x_product is not None and float(start.mode @ (x_product - start.x0)) < 0:
        start.mode = -start.mode  # the mode points towards the product (settings.oriented)
    if settings.method == AUTO:
        settings = settings.replace(method=auto_method(start.atoms, start.free))
    method = METHODS[settings.method]
    # one device for the GP and an mlmd model: 'auto' is resolved once, here
    settings = method.resolve(settings).replace(device=resolve_torch_device(settings.device))
    calc = resolve_calculator(calculator, model, device=settings.device, atoms=atoms)
    surface = TrueSurface(start.atoms, calc, start.free, max_failures=settings.max_failures)
    say = log or (lambda text: None)
    try:
        outcome = method.run(start, surface, settings, say)
    except (EvaluationFailed, TooManyFailures) as exc:
        if surface.first is not None:
            raise
        raise MLMDError(f"the potential could not be evaluated at the start ({exc}); check the start structure "
                        "and the potential's settings") from exc
    result = _result(surface, start, outcome, settings, wall_start)
    if settings.verify and result.converged:
        result.verification = verify_saddle(surface, start, outcome.x, outcome.mode, outcome.energy,
                                            outcome.gradient, settings)
    if (settings.relax or x_product is not None) and result.converged:
        sides = relax_both_sides(result, calc, start.atoms, start.free, start.x0, settings.fmax)
        if result.verification is not None:
            ends = {"start": start.x0} if x_product is None else {"start": start.x0, "product": x_product}
            for target, x_end in ends.items():
                end_minimum, calls, _ = relax_from(start.atoms, calc, start.free, x_end, settings.fmax)
                result.relax_calls += calls
                result.verification.checks.append(connection_check(end_minimum, sides, start.free,
                                                                   rigid_motions(start.atoms, start.free),
                                                                   settings.connect_tolerance_A, target))
    if result.verification is not None:
        for line in result.warnings:
            say(line)
        result.message = ("converged: saddle verified (one negative curvature, no fragmentation, checks passed)"
                          if result.verification.verified else
                          f"converged: saddle NOT verified ({result.verification.reasons()})")
    if result.minima is not None and not all(m["converged"] for m in result.minima):
        errors = "; ".join(m["error"] for m in result.minima if "error" in m)
        result.message += ("; a relaxation to a minimum did not converge (barrier approximate"
                           + (f"; {errors})" if errors else ")"))
    result.wall_s = time.perf_counter() - wall_start
    return result


def _result(surface: TrueSurface, start: SearchStart, outcome: MethodOutcome, settings: SaddleSettings,
            wall_start: float) -> SaddleResult:
    """The confirmed saddle, or the non-image evaluation with the smallest gradient when not converged."""
    x = outcome.x
    if outcome.converged:
        energy, fmax_final = outcome.energy, outcome.fmax
        message = (f"converged: saddle not verified (fmax below {settings.fmax} eV/Å, negative curvature along "
                   "the mode; verification off)")
    else:
        if surface.best is not None:
            fmax_final, x, energy, _ = surface.best
        else:
            energy, fmax_final = float("nan"), float("nan")
        if outcome.reason:
            reason, advice = outcome.reason, "start closer to the saddle, lower --max-step or check the potential"
        elif surface.calls >= settings.max_calls:
            reason, advice = "the budget is spent", "raise --max-calls or start closer to the saddle"
            if surface.failures:
                reason += f" ({surface.failures} evaluations failed)"
        else:
            reason, advice = "the method stopped", "start closer to the saddle or give a better --mode"
        message = (f"not converged: {reason} after {surface.calls} of {settings.max_calls} force calls; kept the "
                   f"structure with the smallest gradient (fmax {fmax_final:.4f} eV/Å): {advice}")
    atoms = start.atoms.copy()
    atoms.positions = surface.positions(x)
    mode = np.zeros((len(atoms), 3))
    mode[start.free] = np.asarray(outcome.mode).reshape(-1, 3)
    return SaddleResult(atoms=atoms, mode=mode, converged=outcome.converged, energy=energy,
                        curvature=outcome.curvature, fmax=fmax_final, force_calls=surface.calls,
                        wall_s=time.perf_counter() - wall_start, gp_s=outcome.gp_s, method=settings.method,
                        message=message, history=surface.history, iterations=outcome.iterations)
