"""The GP-dimer iteration (Koistinen et al., J. Chem. Phys. 2019; J. Chem. Theory Comput. 2020).

:class:`GPDimer` holds one search on a true surface and advances it one outer
iteration at a time, so that :func:`mlmd.saddle.search` and the ASE optimizer
:class:`mlmd.saddle.optimizer.GPDimerOptimizer` drive the same code:

1. :meth:`GPDimer.start`: true energy and gradient at the start ``x0`` and
   at the image ``x0 + Δ N``; then up to ``initial_rotations`` times: fit the
   GP, rotate the dimer on the GP mean, and evaluate the true image at the new
   orientation, until the GP turns the mode by less than 5°.
2. :meth:`GPDimer.step` (one outer iteration): update the GP (MAP
   hyperparameters refitted, warm-started, optionally on a pruned subset,
   when :meth:`~mlmd.saddle.gp.GaussianProcess.needs_refit` says so; else
   the Cholesky factor grows by the new points), run the
   dimer (rotations + L-BFGS translations) on the GP mean from the last true
   point until its largest per-atom gradient is below
   ``max(min(true fmax so far) / 10, fmax / 10)`` or a step leaves the
   :class:`~mlmd.saddle.trust_region.TrustRegion`; evaluate the true surface
   at the new midpoint and adapt the trust region. When the GP cannot be
   fitted, one classical dimer step on the true surface stands in.
3. Converged when the true largest per-atom gradient is below ``fmax``
   (eV/Å) and a true evaluation of the image gives a curvature along the mode
   below ``-min_negative_curvature`` (eV/Å²).
"""

import math
import time
from contextlib import contextmanager
from typing import Callable, Optional

import numpy as np

from .dimer import Translator, dimer_search, effective_force, max_atom_norm, rotate, without_rigid
from .true_surface import EvaluationFailed
from .trust_region import TrustRegion
from .verify import rigid_rows

#: the initial GP rotations stop once the GP turns the mode by less than this angle
ROTATION_SETTLED_RAD = math.radians(5)
#: rotations of the dimer on the GP mean per inner iteration
GP_MAX_ROTATIONS = 20
#: rotations on the true surface in a classical fallback step
FALLBACK_MAX_ROTATIONS = 3


def resolve_torch_device(device: str) -> str:
    """The torch device for the GP: ``auto`` is ``cuda`` when available, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@contextmanager
def gp_threads(device: str):
    """One torch CPU thread while the GP runs on a CPU (its matrices are small; more threads contend)."""
    import torch

    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def update_gp(gp, settings, numbers) -> float:
    """Bring ``gp`` up to date with its data by the refit policy of ``settings``; returns the seconds spent.

    Hyperparameters are refitted (warm-started; 60 L-BFGS iterations the first
    time, ``gp_refit_iterations`` after; on a pruned subset when ``prune``)
    when :meth:`~mlmd.saddle.gp.GaussianProcess.needs_refit` says so, else
    the Cholesky factor grows by the new points.
    """
    from .distance import pruned_subset  # scipy loads on first use

    start = time.perf_counter()
    if gp.needs_refit(settings.gp_refit_every, settings.gp_refit_error_factor):
        subset = None
        if settings.prune and len(gp) > settings.prune_size:
            subset = pruned_subset(np.array(gp.X), numbers, settings.prune_size, settings.prune_newest)
        gp.fit(subset=subset, max_iterations=None if gp.fits == 0 else settings.gp_refit_iterations)
    else:
        gp.refresh()
    return time.perf_counter() - start


#: Å: a GP step that moves no atom further than this counts as no move (a classical step is taken instead)
STALL_STEP_A = 1e-3


class GPDimer:
    """One GP-dimer search on ``surface`` (a :class:`~mlmd.saddle.true_surface.TrueSurface`).

    ``settings``: a :class:`~mlmd.saddle.settings.SaddleSettings` whose
    ``max_step_A`` and ``prune`` are resolved (not None). ``optimal_transport``
    picks the OT trust region (Å) instead of the distance-ratio one.
    ``max_calls`` (default ``settings.max_calls``) bounds the true evaluations
    that :meth:`run` and the initial rotations spend; ``fmax`` (eV/Å) may be
    changed between steps. State after each step: ``x`` (Å), ``mode`` (unit),
    ``energy`` (eV), ``gradient`` (eV/Å) at the last true midpoint,
    ``curvature`` (eV/Å², NaN until checked), ``converged``, ``iterations``,
    ``gp_seconds``.
    """

    def __init__(self, surface, atoms, free, x0, mode, settings, optimal_transport: bool = False,
                 device: str = "cpu", max_calls: Optional[float] = None,
                 say: Optional[Callable[[str], None]] = None):
        from .gp import GaussianProcess
        from .kernel import make_features

        self.surface = surface
        self.settings = settings
        self.fmax = settings.fmax
        self.max_calls = settings.max_calls if max_calls is None else max_calls
        self.say = say or (lambda text: None)
        self.gp = GaussianProcess(make_features(atoms, free, cutoff_A=settings.pair_cutoff_A, device=device))
        self.gp.incremental = settings.gp_incremental
        self.gp.track_errors = settings.gp_refit_error_factor > 0
        self.numbers = atoms.numbers[free]
        if optimal_transport:
            self.trust = TrustRegion.optimal_transport(self.gp, self.numbers, settings.trust_radius_A,
                                                       settings.trust_min_A, settings.trust_max_A)
        else:
            self.trust = TrustRegion.distance_ratio(self.gp, settings.trust_ratio)
        self.x = np.asarray(x0, dtype=float).copy()
        self.mode = np.asarray(mode, dtype=float)
        self.heading = self.mode.copy() if settings.oriented else None  # the start's mode, towards the product
        self.atoms, self.free = atoms, free
        self.energy: Optional[float] = None
        self.gradient: Optional[np.ndarray] = None
        self.curvature = float("nan")
        self.converged = False
        self.iterations = 0
        self.gp_seconds = 0.0
        self.min_fmax = float("inf")
        self.started = False

    # --- pieces ---------------------------------------------------------------
    def _observe(self, x, kind):
        energy, gradient = self.surface(x, kind=kind)
        self.gp.add(x, energy, gradient)
        return energy, gradient

    def _fit(self):
        self.gp_seconds += update_gp(self.gp, self.settings, self.numbers)

    def _on_device(self, vector):
        """``vector`` (NumPy) as a tensor on the GP's device, where the inner loop runs."""
        import torch

        from .kernel import DTYPE

        return torch.as_tensor(np.asarray(vector, dtype=float), dtype=DTYPE, device=self.gp.device)

    def _rigid(self, on_device: bool = False):
        """Orthonormal rows of the rigid motions at the current point (a free molecule), or None."""
        rows = rigid_rows(self.atoms, self.free, self.x)
        return self._on_device(rows) if on_device and rows is not None else rows

    def _image(self):
        return self.x + self.settings.separation_A * self.mode

    # --- the iteration --------------------------------------------------------
    def start(self) -> None:
        """True evaluations at the start and its image, then the initial GP rotations."""
        self.energy, self.gradient = self._observe(self.x, "midpoint")
        self.started = True
        self.min_fmax = max_atom_norm(self.gradient)
        try:
            self._initial_rotations()
        except EvaluationFailed as exc:
            self.trust.on_failure()
            self.say(f"start: the potential failed at a dimer image ({exc}); halving the trust region")

    def _initial_rotations(self) -> None:
        self._observe(self._image(), "image")
        for _ in range(self.settings.rotations_before_first_step):
            self._fit()
            start = time.perf_counter()
            x = self._on_device(self.x)
            new_mode = rotate(self.gp.surface, x, self.gp.surface(x)[1], self._on_device(self.mode),
                              self.settings.separation_A, max_rotations=GP_MAX_ROTATIONS,
                              rigid=self._rigid(on_device=True))[0].cpu().numpy()
            self.gp_seconds += time.perf_counter() - start
            turned = abs(float(new_mode @ self.mode))
            self.mode = new_mode
            if turned > math.cos(ROTATION_SETTLED_RAD) or self.surface.calls >= self.max_calls:
                break
            self._observe(self._image(), "image")

    def _propose(self):
        """``(x_new, GP curvature, predicted energy or None)`` from the GP, or a classical step when it fails."""
        import torch

        s = self.settings
        try:
            self._fit()
            start = time.perf_counter()
            threshold = max(self.min_fmax / 10.0, self.fmax / 10.0)
            # the inner loop runs on the GP's device: tensors in, tensors out, no array copies per GP call
            inner = dimer_search(self.gp.surface, self._on_device(self.x), self._on_device(self.mode),
                                 fmax=threshold, separation_A=s.separation_A, max_iterations=s.inner_iterations,
                                 max_step_A=s.max_step_A, accept=self.trust.accept, max_rotations=GP_MAX_ROTATIONS,
                                 min_negative_curvature=s.min_negative_curvature,
                                 heading=None if self.heading is None else self._on_device(self.heading),
                                 rigid=self._rigid(on_device=True))
            predicted = float(self.gp.surface(inner["x"])[0])
            x_new, mode = inner["x"].cpu().numpy(), inner["mode"].cpu().numpy()
            self.gp_seconds += time.perf_counter() - start
            if not np.all(np.isfinite(x_new)) or not np.all(np.isfinite(mode)):
                raise torch.linalg.LinAlgError("GP dimer produced non-finite coordinates")
            self.mode = mode
            return x_new, inner["curvature"], predicted
        except torch.linalg.LinAlgError:
            pass
        return self._classical_step()

    def _classical_step(self):
        """``(x_new, curvature, None)``: one classical dimer step on the true surface, when the GP misbehaves."""
        s = self.settings
        rigid = self._rigid()
        self.mode, curvature, _, _, _ = rotate(lambda y: self.surface(y, kind="image"), self.x, self.gradient,
                                               self.mode, s.separation_A, max_rotations=FALLBACK_MAX_ROTATIONS,
                                               rigid=rigid)
        step = Translator(max_step_A=s.max_step_A).step(
            self.x, without_rigid(effective_force(self.gradient, self.mode, curvature, self.heading), rigid),
            curvature)
        return self.x + step, curvature, None

    def step(self) -> None:
        """One outer iteration: the GP proposes a point, the true surface is evaluated there (and maybe its image).

        When the potential fails at a point (a midpoint or an image), the
        search stays at its last good midpoint and the trust region halves.
        """
        if not self.started:
            raise RuntimeError("call GPDimer.start() before step()")
        self.iterations += 1
        try:
            self._step()
        except EvaluationFailed as exc:
            self.trust.on_failure()
            self.say(f"outer {self.iterations:3d}  the potential failed ({exc}); back to the last good point, "
                     "halving the trust region")

    def _step(self) -> None:
        s = self.settings
        x_new, gp_curvature, predicted = self._propose()
        if predicted is not None and max_atom_norm(x_new - self.x) < STALL_STEP_A:
            # the GP proposes no move (a flat or ill-fitted surrogate, or a step pulled back onto the current
            # point); without this the search re-evaluated one point until its budget or time ran out
            x_new, gp_curvature, predicted = self._classical_step()
        if np.min(np.linalg.norm(np.array(self.gp.X) - x_new, axis=1)) < 1e-8:
            # the GP has nothing new to say here: learn the curvature along the mode instead
            self._observe(self._image(), "image")
            return
        previous_energy = self.energy
        energy, gradient = self._observe(x_new, "midpoint")
        self.x, self.energy, self.gradient = x_new, energy, gradient
        fmax_now = max_atom_norm(gradient)
        self.min_fmax = min(self.min_fmax, fmax_now)
        if predicted is not None:
            self.trust.update(predicted, energy, previous_energy)
        self.say(f"outer {self.iterations:3d}  calls {self.surface.calls:4d}  E {energy: .6f} eV  "
                 f"fmax {fmax_now:.4f} eV/Å  C_gp {gp_curvature: .4f} eV/Å²  data {len(self.gp):3d}  "
                 f"gp {self.gp_seconds:.2f} s  {self.trust.describe()}"
                 + ("  (classical fallback)" if predicted is None else ""))
        if fmax_now < self.fmax and self.surface.calls < self.max_calls:
            image_gradient = self._observe(self._image(), "image")[1]
            self.curvature = float((image_gradient - gradient) @ self.mode) / s.separation_A
            if self.curvature < -s.min_negative_curvature:
                self.converged = True
                return
            self.say(f"outer {self.iterations:3d}  curvature along the mode is {self.curvature:.4f} eV/Å² "
                     "(not negative): continuing")

    def run(self) -> None:
        """Start, then take outer iterations until converged or ``max_calls`` true evaluations are spent."""
        self.start()
        while not self.converged and self.surface.calls < self.max_calls:
            self.step()
