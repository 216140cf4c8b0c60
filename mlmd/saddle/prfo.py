"""Partitioned rational-function optimisation (P-RFO) of a first-order saddle, in Cartesian coordinates.

Baker (J. Comput. Chem. 1986) with Bofill's Hessian update (Int. J. Quantum
Chem. 1994). With the approximate Hessian ``H = Σ b_i u_i u_iᵀ`` (eV/Å²) and
the gradient components ``F_i = u_i·g`` (eV/Å), the followed mode ``k`` is
the eigenvector that overlaps most with the previous followed mode (at first
the requested mode); the step maximises along it and minimises along the
others::

    s = -F_k/(b_k - λ_p) u_k - Σ_{i≠k} F_i/(b_i - λ_n) u_i,
    λ_p = b_k/2 + √(b_k²/4 + F_k²),  λ_n = lowest eigenvalue of [[diag(b_{i≠k}), F], [Fᵀ, 0]].

The step is scaled down to a trust radius (Å, largest atom displacement)
that grows or shrinks with how well the quadratic model ``g·s + ½ sᵀHs``
predicted the energy change (:class:`~mlmd.saddle.trust_region.TrustRegion`).
After each step ``H += φ ΔH_SR1 + (1 - φ) ΔH_PSB`` with ``ξ = Δg - H s``,
``φ = (ξ·s)² / (|ξ|²|s|²)``. The initial Hessian is a finite-difference
Hessian (forward differences, one call per free direction) when there are at
most :data:`FULL_HESSIAN_MAX` free coordinates, else ``c₀ (I - v vᵀ) + c v
vᵀ`` from the requested mode ``v`` and its finite-difference curvature
``c`` (one call; ``c₀`` = :data:`DEFAULT_CURVATURE`). Rigid translations and
rotations are projected out when they are symmetries. Converged when the
largest per-atom gradient is below ``fmax`` and the model Hessian has
exactly one negative eigenvalue.
"""

import numpy as np

from .curvature import rigid_basis
from .dimer import max_atom_norm
from .methods import MethodOutcome, register_method
from .true_surface import EvaluationFailed, TooManyFailures
from .trust_region import TrustRegion
from .verify import rigid_motions

#: free coordinates up to which the initial Hessian is a full finite-difference one
FULL_HESSIAN_MAX = 30
#: eV/Å²: curvature given to the directions other than the mode in the mode-guess initial Hessian
DEFAULT_CURVATURE = 10.0
#: eV/Å²: curvature given to rigid motions so that no step goes along them
RIGID_CURVATURE = 1e3


def bofill_update(H: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bofill's mix of the symmetric rank-one and Powell-symmetric-Broyden updates of ``H`` for step ``s``."""
    xi = y - H @ s
    ss, xs, xx = float(s @ s), float(xi @ s), float(xi @ xi)
    if ss < 1e-16 or xx < 1e-16:
        return H
    psb = (np.outer(xi, s) + np.outer(s, xi)) / ss - xs * np.outer(s, s) / ss ** 2
    phi = xs * xs / (xx * ss)
    sr1 = np.outer(xi, xi) / xs if abs(xs) > 1e-12 else 0.0
    return H + phi * sr1 + (1.0 - phi) * psb


def prfo_step(H: np.ndarray, g: np.ndarray, follow: np.ndarray):
    """``(step Å, followed unit eigenvector, its eigenvalue eV/Å², negative eigenvalues)`` of one P-RFO step."""
    b, U = np.linalg.eigh(0.5 * (H + H.T))
    k = int(np.argmax(np.abs(U.T @ follow)))
    F = U.T @ g
    lam_p = 0.5 * b[k] + np.sqrt(0.25 * b[k] ** 2 + F[k] ** 2)
    others = np.delete(np.arange(len(b)), k)
    m = len(others)
    augmented = np.zeros((m + 1, m + 1))
    augmented[:m, :m] = np.diag(b[others])
    augmented[:m, m] = augmented[m, :m] = F[others]
    lam_n = np.linalg.eigvalsh(augmented)[0]
    step = -F[k] / (b[k] - lam_p) * U[:, k]
    for i in others:
        denominator = b[i] - lam_n
        if abs(denominator) > 1e-12:
            step -= F[i] / denominator * U[:, i]
    return step, U[:, k], float(b[k]), int((b < 0).sum())


def initial_hessian(surface, x, g, mode, rigid, step_A: float) -> np.ndarray:
    """Finite-difference Hessian (small systems) or the mode guess (one call), rigid motions stiffened."""
    n = len(x)
    projector = np.eye(n) - (rigid.T @ rigid if rigid is not None else 0.0)
    if n <= FULL_HESSIAN_MAX:
        H = np.zeros((n, n))
        directions = np.linalg.eigh(projector)[1][:, -(n - (0 if rigid is None else len(rigid))):]
        for v in directions.T:
            H += np.outer((surface(x + step_A * v, kind="image")[1] - g) / step_A, v)
        H = 0.5 * (H + H.T)
    else:
        curvature = float((surface(x + step_A * mode, kind="image")[1] - g) @ mode) / step_A
        H = DEFAULT_CURVATURE * np.eye(n) + (curvature - DEFAULT_CURVATURE) * np.outer(mode, mode)
    H = projector @ H @ projector
    if rigid is not None:
        H += RIGID_CURVATURE * rigid.T @ rigid
    return H


@register_method("p-rfo", default_max_step_A=0.2,
                 summary="partitioned rational-function optimisation, Bofill updates, Cartesian")
def prfo(start, surface, settings, say) -> MethodOutcome:
    """P-RFO from ``start.x0`` following ``start.mode``, up to ``settings.max_calls`` true evaluations."""
    rotations = rigid_motions(start.atoms, start.free)
    x = np.asarray(start.x0, dtype=float).copy()
    rigid = None if rotations is None else rigid_basis(surface.positions(x)[start.free], rotations)
    projector = np.eye(len(x)) - (rigid.T @ rigid if rigid is not None else 0.0)
    follow = np.asarray(start.mode, dtype=float)
    energy, g = surface(x, kind="midpoint")
    trust = TrustRegion(lambda y: max_atom_norm(y - x), settings.max_step_A, settings.trust_min_A / 10.0,
                        settings.max_step_A, failure_min_limit=0.0, unit="Å")
    outcome = MethodOutcome(x=x, mode=follow, converged=False, curvature=float("nan"), iterations=0,
                            energy=energy, fmax=max_atom_norm(g), gradient=g)
    try:
        H = initial_hessian(surface, x, g, follow, rigid, settings.separation_A)
        while surface.calls < settings.max_calls:
            outcome.iterations += 1
            step, follow, curvature, negative = prfo_step(H, projector @ g, follow)
            outcome.mode, outcome.curvature = follow, curvature
            fmax_now = max_atom_norm(g)
            say(f"p-rfo {outcome.iterations:4d}  calls {surface.calls:5d}  E {energy: .6f} eV  fmax {fmax_now:.4f} "
                f"eV/Å  b {curvature: .4f} eV/Å²  negative {negative}  {trust.describe()}")
            if fmax_now < settings.fmax and negative == 1 and curvature < -settings.min_negative_curvature:
                outcome.converged = True
                break
            length = max_atom_norm(step)
            if length > trust.limit:
                step *= trust.limit / length
            predicted = energy + float(g @ step) + 0.5 * float(step @ H @ step)
            try:
                energy_new, g_new = surface(x + step, kind="midpoint")
            except EvaluationFailed as exc:
                trust.on_failure()
                say(f"p-rfo: the potential failed ({exc}); staying at the last good point, {trust.describe()}")
                continue
            trust.update(predicted, energy_new, energy)
            H = bofill_update(H, step, projector @ (g_new - g))
            x, energy, g = x + step, energy_new, g_new
            outcome.x, outcome.energy, outcome.gradient, outcome.fmax = x, energy, g, max_atom_norm(g)
    except TooManyFailures as exc:
        outcome.reason = str(exc)
    return outcome
