"""The GP-dimer as an ASE optimizer: :class:`GPDimerOptimizer`.

``GPDimerOptimizer(atoms, settings)`` is an ``ase.optimize.optimize.Optimizer``,
so ``attach``, ``irun``, ``run(fmax=..., steps=...)``, ``logfile=`` and
``trajectory=`` work as for any ASE optimizer. The atoms' calculator is the
true surface. Each :meth:`~GPDimerOptimizer.step` is one outer iteration of
the same :class:`~mlmd.saddle.gp_dimer.GPDimer` code that
:func:`mlmd.saddle.search` runs (the first step also makes the start-up
evaluations), and evaluates the true calculator once or more.
:meth:`~GPDimerOptimizer.converged` is the GP-dimer's own test: largest true
per-atom force below ``fmax`` (eV/Å) *and* a true image evaluation confirming a
curvature along the mode below ``-min_negative_curvature`` (eV/Å²); small
forces alone (a minimum) do not count.

The optimizer works on :class:`SaddleOptimizable` (ASE's ``Optimizable``
protocol, as NEB and the filters use it): energies and forces it reports, logs
and writes to the trajectory are the true values at the last evaluated
midpoint, reused rather than recomputed, so logging and trajectories cost no
extra force calls.
"""

import math
from typing import Optional

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.optimize.optimize import DEFAULT_MAX_STEPS, OptimizableAtoms, Optimizer

from ..errors import MLMDError
from .gp_dimer import gp_threads, resolve_torch_device
from .methods import AUTO, METHODS
from .settings import SaddleSettings, SettingsError
from .start import prepare_start
from .true_surface import TrueSurface


class SaddleOptimizable(OptimizableAtoms):
    """The atoms under a GP-dimer iteration: true energy and forces of the last midpoint, without recomputing.

    While the atoms sit at the iteration's last true midpoint, the gradient
    (eV/Å, zero on fixed atoms) and energy (eV) come from that evaluation;
    anywhere else (before the first step) they come from the calculator.
    """

    def __init__(self, atoms, iteration, surface):
        super().__init__(atoms)
        self.iteration = iteration
        self.surface = surface

    def at_midpoint(self) -> bool:
        """Whether the atoms are at the iteration's last true midpoint."""
        return (self.iteration.started and self.iteration.gradient is not None
                and np.array_equal(self.atoms.positions, self.surface.positions(self.iteration.x)))

    def forces(self) -> np.ndarray:
        """True forces [n_atoms, 3] (eV/Å) at the last midpoint, zero on atoms that do not move."""
        forces = np.zeros((len(self.atoms), 3))
        forces[self.surface.free] = -np.asarray(self.iteration.gradient).reshape(-1, 3)
        return forces

    def get_gradient(self):
        if self.at_midpoint():
            return -self.forces().ravel()
        return super().get_gradient()

    def get_value(self):
        if self.at_midpoint():
            return float(self.iteration.energy)
        return super().get_value()

    def iterimages(self):
        if not self.at_midpoint():
            yield from super().iterimages()
            return
        frame = self.atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=float(self.iteration.energy), forces=self.forces())
        yield frame


class GPDimerOptimizer(Optimizer):
    """GP-dimer saddle search on ``atoms`` (with their calculator) as an ASE optimizer.

    ``settings``: a :class:`~mlmd.saddle.settings.SaddleSettings` (default
    ones when None; its ``fmax`` is replaced by ``run``/``irun``'s) naming a
    step-by-step method (``gp-dimer`` or ``ot-gp-dimer``), the initial mode and
    the GP and trust-region settings. A displacement in the settings moves the
    atoms to the displaced start here. ``max_calls``: budget of true
    evaluations (None: no budget besides ``steps``); once spent, ``step``
    raises :class:`~mlmd.errors.MLMDError`. The final mode and curvature are
    :attr:`mode` and :attr:`curvature`; the call log is :attr:`history`.
    """

    def __init__(self, atoms, settings: Optional[SaddleSettings] = None, max_calls: Optional[int] = None,
                 logfile="-", trajectory=None, append_trajectory: bool = False, **kwargs):
        settings = (settings if settings is not None else SaddleSettings(method="gp-dimer")).validate()
        if settings.method == AUTO:  # the search default; this optimizer steps a GP-dimer
            settings = settings.replace(method="gp-dimer")
        method = METHODS[settings.method]
        if method.stepper is None:
            steppers = [name for name, m in METHODS.items() if m.stepper is not None]
            raise SettingsError(f"GPDimerOptimizer takes one outer iteration per step, which method "
                                f"{settings.method!r} does not offer: use one of {', '.join(steppers)}, or "
                                "mlmd.saddle.search for the others")
        if atoms.calc is None:
            raise MLMDError("the atoms have no calculator: attach the true potential (atoms.calc = ...) first")
        self.settings = method.resolve(settings)
        start = prepare_start(atoms, self.settings)
        self.surface = TrueSurface(start.atoms, atoms.calc, start.free)
        atoms.positions = self.surface.positions(start.x0)
        self.device = resolve_torch_device(self.settings.device)
        self.iteration = method.stepper(self.surface, start, self.settings, device=self.device,
                                        say=self._say, max_calls=math.inf if max_calls is None else max_calls)
        super().__init__(SaddleOptimizable(atoms, self.iteration, self.surface), logfile=logfile,
                         trajectory=trajectory, append_trajectory=append_trajectory, **kwargs)

    def _say(self, text: str) -> None:
        self.logfile.write(text + "\n")

    @property
    def mode(self) -> np.ndarray:
        """The unit mode over all atoms [n_atoms, 3] (zeros for fixed atoms)."""
        mode = np.zeros((len(self.surface.base), 3))
        mode[self.surface.free] = np.asarray(self.iteration.mode).reshape(-1, 3)
        return mode

    @property
    def curvature(self) -> float:
        """Curvature (eV/Å²) along the mode from the last true image check; NaN before the first."""
        return self.iteration.curvature

    @property
    def history(self):
        """Every true evaluation: call number, energy (eV), fmax (eV/Å) and kind."""
        return self.surface.history

    @property
    def force_calls(self) -> int:
        return self.surface.calls

    def todict(self):
        return {"type": "optimization", "optimizer": self.__class__.__name__, "method": self.settings.method,
                "fmax": self.fmax}

    def irun(self, fmax: float = 0.01, steps: int = DEFAULT_MAX_STEPS):
        """As ASE's ``irun``; ``fmax`` (eV/Å) also sets the GP-dimer's convergence threshold."""
        return super().irun(fmax=fmax, steps=steps)

    def run(self, fmax: float = 0.01, steps: int = DEFAULT_MAX_STEPS) -> bool:
        """As ASE's ``run``: True when a saddle is confirmed on the true surface."""
        return super().run(fmax=fmax, steps=steps)

    def step(self, forces=None) -> None:
        """One outer GP-dimer iteration (the first also evaluates the start and its image)."""
        iteration = self.iteration
        iteration.fmax = self.fmax if self.fmax is not None else self.settings.fmax
        with gp_threads(self.device):
            if not iteration.started:
                iteration.start()
            if self.surface.calls >= iteration.max_calls:
                raise MLMDError(f"GPDimerOptimizer spent its budget of {iteration.max_calls} true force calls after "
                                f"{self.nsteps} steps without a confirmed saddle: raise max_calls or start closer "
                                "to the saddle")
            iteration.step()
        self.optimizable.atoms.positions = self.surface.positions(iteration.x)

    def gradient_converged(self, gradient) -> bool:
        """The GP-dimer's test (true fmax below ``fmax`` and confirmed negative curvature), not forces alone."""
        return bool(self.iteration.converged)
