"""Saddle-search methods, chosen by name from the registry :data:`METHODS`.

- ``dimer``: the classical dimer (:mod:`mlmd.saddle.dimer`) on the true
  surface; largest step 0.2 Å unless ``max_step_A`` says otherwise.
- ``gp-dimer``: the GP-dimer (:mod:`mlmd.saddle.gp_dimer`) with the
  interatomic-distance-ratio trust region of the original method; 0.1 Å steps.
- ``ot-gp-dimer``: the GP-dimer with the optimal-transport trust region (Å)
  and hyperparameters fitted on a pruned subset; 0.1 Å steps.
- ``p-rfo``: partitioned rational-function optimisation with Bofill updates
  (:mod:`mlmd.saddle.prfo`) on the true surface, in internal coordinates for
  a molecule and Cartesian otherwise (``coordinates``); trust radius starts
  at 0.2 Å unless ``max_step_A`` says otherwise.
- ``gp-p-rfo``: P-RFO on the GP surrogate with one true call per outer
  iteration (:mod:`mlmd.saddle.gp_prfo`); inner steps of at most 0.1 Å.

A method is a function ``run(start, surface, settings, say) -> MethodOutcome``
(``start`` a :class:`~mlmd.saddle.start.SearchStart`, ``surface`` a
:class:`~mlmd.saddle.true_surface.TrueSurface`, ``settings`` resolved by
:meth:`SaddleMethod.resolve`), added with the :func:`register_method` decorator.
A method that advances one outer iteration at a time is registered with
:func:`register_stepper` instead: its factory ``stepper(surface, start,
settings, device, say, max_calls) -> iteration`` returns an object with
``start()``, ``step()``, ``run()`` and the state of
:class:`~mlmd.saddle.gp_dimer.GPDimer`; :func:`search` runs it to the end and
:class:`~mlmd.saddle.optimizer.GPDimerOptimizer` takes one step per ASE step.
"""

from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Optional

import numpy as np

from .dimer import dimer_search, max_atom_norm
from .gp_dimer import GPDimer, gp_threads, resolve_torch_device
from .true_surface import EvaluationFailed, TooManyFailures
from .verify import rigid_rows


@dataclass
class MethodOutcome:
    """Where a method ended: ``x`` (Å, free coordinates), unit ``mode``, curvature (eV/Å²), energy (eV), fmax (eV/Å).

    ``energy``, ``gradient`` (eV/Å) and ``fmax`` belong to ``x`` and may be
    None when the method ended before evaluating it; ``gp_s`` is the time
    spent on the GP (s); ``reason`` says why an unconverged method stopped
    (empty: its budget ran out).
    """

    x: np.ndarray
    mode: np.ndarray
    converged: bool
    curvature: float
    iterations: int
    energy: Optional[float] = None
    fmax: Optional[float] = None
    gp_s: float = 0.0
    gradient: Optional[np.ndarray] = None
    reason: str = ""


@dataclass(frozen=True)
class SaddleMethod:
    """A registered method: its runner and the defaults it gives to unset settings."""

    name: str
    run: Callable
    default_max_step_A: float
    default_prune: bool = False
    summary: str = ""
    stepper: Optional[Callable] = None

    def resolve(self, settings):
        """``settings`` with ``max_step_A`` and ``prune`` filled in from this method's defaults."""
        return settings.replace(
            max_step_A=self.default_max_step_A if settings.max_step_A is None else settings.max_step_A,
            prune=self.default_prune if settings.prune is None else settings.prune)


#: saddle-search methods by name; ``mlmd saddle --method`` offers these and :data:`AUTO`
METHODS: Dict[str, SaddleMethod] = {}

#: the method name that :func:`auto_method` resolves from the start structure
AUTO = "auto"


def auto_method(atoms, free) -> str:
    """The default method, chosen by measurement (``scripts/evaluate_saddle.py``, 3 starts per case):
    ``gp-p-rfo`` for a free molecule (intended saddle on 9 of 15 GFN2-xTB searches in a median of 12 calls,
    the GP-dimer on 2), ``p-rfo`` otherwise (slabs, cells, fixed atoms: Cu(100) exchange and vacancy hop
    5 of 6 in 16-31 calls, where ``gp-p-rfo`` spent its 30 s limit on the GP at 99 coordinates)."""
    molecular = len(free) == len(atoms) >= 2 and not atoms.pbc.any()
    return "gp-p-rfo" if molecular else "p-rfo"


def _register(method: SaddleMethod) -> None:
    if method.name in METHODS:
        raise ValueError(f"a saddle method named {method.name!r} is already registered")
    METHODS[method.name] = method


def register_method(name: str, default_max_step_A: float, default_prune: bool = False, summary: str = ""):
    """Decorator that registers ``run(start, surface, settings, say) -> MethodOutcome`` under ``name``."""

    def decorator(run):
        _register(SaddleMethod(name, run, default_max_step_A, default_prune, summary))
        return run

    return decorator


def register_stepper(name: str, default_max_step_A: float, default_prune: bool = False, summary: str = ""):
    """Decorator that registers an iteration factory (see the module docstring) under ``name``."""

    def decorator(stepper):
        _register(SaddleMethod(name, partial(run_stepper, stepper), default_max_step_A, default_prune, summary,
                               stepper=stepper))
        return stepper

    return decorator


def run_stepper(stepper, start, surface, settings, say) -> MethodOutcome:
    """Run an iteration from ``stepper`` until it converges or spends ``settings.max_calls``."""
    device = resolve_torch_device(settings.device)
    with gp_threads(device):
        iteration = stepper(surface, start, settings, device=device, say=say)
        reason = ""
        try:
            iteration.run()
        except TooManyFailures as exc:
            reason = str(exc)
    gradient = iteration.gradient
    return MethodOutcome(x=iteration.x, mode=iteration.mode, converged=iteration.converged,
                         curvature=iteration.curvature, iterations=iteration.iterations, energy=iteration.energy,
                         fmax=None if gradient is None else max_atom_norm(gradient), gp_s=iteration.gp_seconds,
                         gradient=gradient, reason=reason)


@register_stepper("gp-dimer", default_max_step_A=0.1, summary="GP-dimer, distance-ratio trust region")
def gp_dimer(surface, start, settings, device="cpu", say=None, max_calls=None) -> GPDimer:
    """GP-dimer with the interatomic-distance-ratio trust region."""
    return GPDimer(surface, start.atoms, start.free, start.x0, start.mode, settings, optimal_transport=False,
                   device=device, max_calls=max_calls, say=say)


@register_stepper("ot-gp-dimer", default_max_step_A=0.1, default_prune=True,
                  summary="GP-dimer, optimal-transport trust region (Å), pruned fits")
def ot_gp_dimer(surface, start, settings, device="cpu", say=None, max_calls=None) -> GPDimer:
    """GP-dimer with the optimal-transport trust region and pruned hyperparameter fits."""
    return GPDimer(surface, start.atoms, start.free, start.x0, start.mode, settings, optimal_transport=True,
                   device=device, max_calls=max_calls, say=say)


class _OutOfCalls(Exception):
    """The classical dimer spent its budget of true evaluations."""


@register_method("dimer", default_max_step_A=0.2, summary="classical dimer on the true surface")
def classical_dimer(start, surface, settings, say) -> MethodOutcome:
    """The classical dimer on the true surface, up to ``settings.max_calls`` evaluations."""

    def true(x):
        if surface.calls >= settings.max_calls:
            raise _OutOfCalls
        return surface(x, kind="dimer")

    def progress(iteration, x, energy, gradient, curvature):
        say(f"dimer {iteration:4d}  calls {surface.calls:5d}  E {energy: .6f} eV  fmax {max_atom_norm(gradient):.4f} "
            f"eV/Å  C {curvature: .4f} eV/Å²")

    def failed(exc):
        say(f"dimer: the potential failed ({exc}); back to the last good point with half the step")

    out = {"x": start.x0, "mode": start.mode, "converged": False, "curvature": float("nan"), "iterations": 0}
    reason = ""
    try:
        out = dimer_search(true, start.x0, start.mode, fmax=settings.fmax, separation_A=settings.separation_A,
                           max_step_A=settings.max_step_A, max_calls=settings.max_calls, callback=progress,
                           min_negative_curvature=settings.min_negative_curvature, failures=(EvaluationFailed,),
                           on_failure=failed, heading=start.mode if settings.oriented else None,
                           rigid=rigid_rows(start.atoms, start.free, start.x0))
    except _OutOfCalls:
        pass
    except TooManyFailures as exc:
        reason = str(exc)
    gradient = out.get("gradient")
    return MethodOutcome(x=out["x"], mode=out["mode"], converged=out["converged"], curvature=out["curvature"],
                         iterations=out["iterations"], energy=out.get("energy"),
                         fmax=None if gradient is None else max_atom_norm(gradient), gradient=gradient,
                         reason=reason)


from . import gp_prfo, prfo  # noqa: E402,F401  (register 'p-rfo' and 'gp-p-rfo'; they import this registry)
