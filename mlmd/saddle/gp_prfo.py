"""GP-surrogate P-RFO (method ``gp-p-rfo``): P-RFO on the GP's mean surface, one true call per outer iteration.

Start: true evaluations at ``x0`` and at the image ``x0 + Δ v`` (``v`` the
requested mode, ``Δ`` = ``separation_A``). Each outer iteration then

1. brings the GP up to date by the refit policy
   (:func:`~mlmd.saddle.gp_dimer.update_gp`, the GP-dimer's);
2. runs P-RFO (:func:`~mlmd.saddle.prfo.model_step`; internal coordinates
   for a molecule, else Cartesian, as ``p-rfo``) on the GP mean energy and
   gradient from the last true point, with the mean's Hessian from central
   differences of its gradient there (one batched prediction of ``2n``
   points, step 1e-3 Å) and Bofill updates from the mean's gradient along
   the inner steps (one prediction each), each step moving no atom more than ``max_step_A`` (Å),
   until the GP's largest per-atom gradient is below ``max(min true fmax,
   fmax) / 10`` with one negative eigenvalue, a step leaves the trust region
   (the largest atom distance to the nearest true point, Å, within a radius
   that starts at ``trust_radius_A`` and adapts between ``trust_min_A`` and
   ``trust_max_A`` to the GP's energy error,
   :class:`~mlmd.saddle.trust_region.TrustRegion`), or ``inner_iterations``
   steps are spent;
3. evaluates the true surface there once and adds the point to the GP.

Converged when the true largest per-atom gradient is below ``fmax`` (eV/Å)
and the GP mean's Hessian at that point (where the GP holds the true energy
and gradient) has exactly one negative eigenvalue, with a curvature along the
followed mode below ``-min_negative_curvature`` (eV/Å²). When the gradient is
small but the GP's Hessian index is not one, a true image along the doubtful
direction (:meth:`SurrogatePRFO.probe`) teaches the GP that curvature first. The search's
verification (:mod:`mlmd.saddle.verify`) then checks the Hessian index on the
true surface.
"""

import math
import time

import numpy as np

from .dimer import max_atom_norm
from .gp_dimer import gp_threads, resolve_torch_device, update_gp
from .methods import MethodOutcome, register_method
from .prfo import STIFF_CURVATURE, bofill_update, make_coordinates, model_step, refresh_coordinates
from .true_surface import EvaluationFailed, TooManyFailures
from .trust_region import TrustRegion

#: Å: central-difference step of the GP mean's Hessian
HESSIAN_STEP_A = 1e-3


class SurrogatePRFO:
    """One GP-P-RFO search on ``surface`` from ``start`` (see the module docstring); :meth:`run`, then
    :meth:`outcome`."""

    def __init__(self, start, surface, settings, device: str, say):
        from .gp import GaussianProcess
        from .kernel import make_features

        self.surface, self.settings, self.say = surface, settings, say
        self.numbers = start.atoms.numbers[start.free]
        self.gp = GaussianProcess(make_features(start.atoms, start.free, cutoff_A=settings.pair_cutoff_A,
                                                device=device))
        self.gp.incremental = settings.gp_incremental
        self.gp.track_errors = settings.gp_refit_error_factor > 0
        self.x = np.asarray(start.x0, dtype=float).copy()
        self.start_mode = np.asarray(start.mode, dtype=float)
        self.coords = make_coordinates(settings.coordinates, start.atoms, start.free, self.x)
        self.follow = self.coords.vector(self.x, self.start_mode)
        self.trust = TrustRegion(self.distance, settings.trust_radius_A, settings.trust_min_A, settings.trust_max_A,
                                 failure_min_limit=settings.trust_min_A, unit="Å")
        self.result = MethodOutcome(x=self.x, mode=self.start_mode, converged=False, curvature=float("nan"),
                                    iterations=0)
        self.min_fmax = math.inf

    def distance(self, y) -> float:
        """Largest atom distance (Å) from ``y`` to the nearest true point."""
        X = np.array(self.gp.X).reshape(len(self.gp), -1, 3)
        return float(np.linalg.norm(X - np.reshape(y, (1, -1, 3)), axis=2).max(axis=1).min())

    def observe(self, x, kind: str):
        energy, gradient = self.surface(x, kind=kind)
        self.gp.add(x, energy, gradient)
        return energy, gradient

    def surrogate_step(self, x, limit_A: float, previous=None):
        """``(GP energy eV, GP gradient eV/Å, ModelStep)`` of P-RFO on the GP mean at ``x``.

        The mean's Hessian comes from central differences of its gradient (``2n`` predictions) or, given
        ``previous = (x_before, its ModelStep)`` inside the inner loop, from a Bofill update of the
        Hessian there with the mean's gradient change (one prediction)."""
        if previous is None:
            n = len(x)
            h = HESSIAN_STEP_A
            energies, gradients = self.gp.predict(np.vstack([x, x + h * np.eye(n), x - h * np.eye(n)]))
            H_x = (gradients[1:n + 1] - gradients[n + 1:]).T / (2 * h)
            g = gradients[0]
            self.coords, _, self.follow = refresh_coordinates(self.coords, self.numbers, x, g, None, self.follow)
            self.H_q = self.coords.hessian(x, 0.5 * (H_x + H_x.T), g)
        else:
            x_before, before = previous
            energies, gradients = self.gp.predict(np.reshape(x, (1, -1)))
            g = gradients[0]
            dq = self.coords.difference(self.coords.values(x), self.coords.values(x_before))
            self.H_q = bofill_update(self.H_q, dq, self.coords.gradient(x, g) - before.g_q)
            self.coords, self.H_q, self.follow = refresh_coordinates(self.coords, self.numbers, x, g, self.H_q,
                                                                     self.follow)
        step = model_step(self.coords, x, g, self.H_q, self.follow, limit_A, self.settings.oriented)
        self.follow = step.follow
        return float(energies[0]), g, step

    def inner(self, g, step):
        """P-RFO on the GP mean from the last true point; ``(x, predicted energy eV)`` where it stopped."""
        s = self.settings
        threshold = max(self.min_fmax, s.fmax) / 10.0
        x, energy = self.x, float("nan")
        for _ in range(s.inner_iterations):
            if max_atom_norm(g) < threshold and step.negative == 1:
                break
            x_new = self.coords.to_cartesian(x, step.dq, step.frame)[0]
            if not np.all(np.isfinite(x_new)):
                break
            x_before = x
            x, stop = self.trust.accept(x, x_new)
            energy, g, step = self.surrogate_step(x, s.max_step_A, previous=(x_before, step))
            if stop:
                break
        return x, energy

    def probe(self, step) -> None:
        """True image along the GP-mean Hessian's doubtful direction at a point of small true gradient.

        That is the lowest eigenvector other than the followed mode when the GP
        sees a second negative curvature (often a direction without data, where
        the GP has only its prior), else the followed mode; the image teaches the
        GP the true curvature there.
        """
        P = step.frame.P
        b, U = np.linalg.eigh(P @ self.H_q @ P + STIFF_CURVATURE * (np.eye(len(P)) - P))
        others = np.flatnonzero(np.abs(U.T @ step.follow) < 0.9)
        direction = step.follow
        if step.negative != 1 and len(others) and b[others[0]] < 0:
            direction = U[:, others[0]]
        vector = step.frame.Binv @ direction
        vector /= max(np.linalg.norm(vector), 1e-300)
        self.say(f"gp-p-rfo {self.result.iterations:3d}  small true gradient but the GP sees {step.negative} negative "
                 "curvatures: a true image along the doubtful direction")
        try:
            self.observe(self.x + self.settings.separation_A * vector, "image")
        except EvaluationFailed as exc:
            self.trust.on_failure()
            self.say(f"gp-p-rfo: the potential failed at an image ({exc})")

    def run(self) -> None:
        s, surface = self.settings, self.surface
        energy, gradient = self.observe(self.x, "midpoint")
        self.min_fmax = max_atom_norm(gradient)
        try:
            self.observe(self.x + s.separation_A * self.start_mode, "image")
        except EvaluationFailed as exc:
            self.trust.on_failure()
            self.say(f"gp-p-rfo: the potential failed at the mode's image ({exc}); halving the trust region")
        result = self.result
        result.energy, result.gradient, result.fmax = energy, gradient, self.min_fmax
        while surface.calls < s.max_calls:
            result.iterations += 1
            began = time.perf_counter()
            update_gp(self.gp, s, self.numbers)
            _, g_gp, step = self.surrogate_step(self.x, s.max_step_A)
            result.mode, result.curvature = step.mode, step.curvature
            if max_atom_norm(gradient) < s.fmax:
                result.gp_s += time.perf_counter() - began
                if step.negative == 1 and step.curvature < -s.min_negative_curvature:
                    result.converged = True
                    break
                self.probe(step)
                continue
            x_new, predicted = self.inner(g_gp, step)
            result.gp_s += time.perf_counter() - began
            try:
                if self.distance(x_new) < 1e-8:  # the GP has nothing new to say here: learn along the mode
                    self.observe(self.x + s.separation_A * step.mode, "image")
                    continue
                energy_new, gradient_new = self.observe(x_new, "midpoint")
            except EvaluationFailed as exc:
                self.trust.on_failure()
                self.say(f"gp-p-rfo {result.iterations:3d}  the potential failed ({exc}); back to the last good "
                         f"point, {self.trust.describe()}")
                continue
            self.trust.update(predicted, energy_new, energy)
            self.x, energy, gradient = x_new, energy_new, gradient_new
            self.min_fmax = min(self.min_fmax, max_atom_norm(gradient))
            result.x, result.energy, result.gradient, result.fmax = self.x, energy, gradient, max_atom_norm(gradient)
            self.say(f"gp-p-rfo {result.iterations:3d}  calls {surface.calls:4d}  E {energy: .6f} eV  "
                     f"fmax {result.fmax:.4f} eV/Å  C_gp {step.curvature: .4f} eV/Å²  negative {step.negative}  "
                     f"{self.coords.kind}  data {len(self.gp):3d}  gp {result.gp_s:.2f} s  {self.trust.describe()}")


@register_method("gp-p-rfo", default_max_step_A=0.1,
                 summary="P-RFO on the GP surrogate, one true call per outer iteration; internal coordinates "
                 "for molecules, else Cartesian")
def gp_prfo(start, surface, settings, say) -> MethodOutcome:
    """GP-P-RFO from ``start.x0`` following ``start.mode``, up to ``settings.max_calls`` true evaluations."""
    device = resolve_torch_device(settings.device)
    search = SurrogatePRFO(start, surface, settings, device, say)
    with gp_threads(device):
        try:
            search.run()
        except TooManyFailures as exc:
            search.result.reason = str(exc)
    return search.result
