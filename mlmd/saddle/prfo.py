"""Partitioned rational-function optimisation (P-RFO) of a first-order saddle, in Cartesian or internal coordinates.

Baker (J. Comput. Chem. 1986) with Bofill's Hessian update (Int. J. Quantum
Chem. 1994). The coordinates ``q`` are redundant internal ones for a molecule
and Cartesian ones otherwise (:func:`make_coordinates`,
:mod:`mlmd.saddle.internal`); with the projector ``P`` onto the displacements
a Cartesian step can make, the model Hessian is ``P H_q P + 10³ (1 - P)`` and
the gradient ``P g_q``. With that Hessian ``Σ b_i u_i u_iᵀ`` and the gradient
components ``F_i = u_i·g``, the followed mode ``k`` is the eigenvector that
overlaps most with the previous followed mode (at first the requested mode's
image ``B v``) when its eigenvalue is negative; the step maximises along it and
minimises along the others::

    s = -F_k/(b_k - λ_p) u_k - Σ_{i≠k} F_i/(b_i - λ_n) u_i,
    λ_p = b_k/2 + √(b_k²/4 + F_k²),  λ_n = lowest eigenvalue of [[diag(b_{i≠k}), F], [Fᵀ, 0]].

While that eigenvalue is still positive (near the minimum) the followed mode
itself is maximised and the eigenvectors of the Hessian projected onto its
complement are minimised (:func:`prfo_step`): near a minimum the eigenvector
with the largest overlap is often not the intended one (for H + H₂ the
requested antisymmetric stretch overlaps both bond stretches equally).

The step is scaled down until its first-order Cartesian image moves no atom
further than a trust radius (Å) that grows or shrinks with how well the
quadratic model ``g·s + ½ sᵀHs`` predicted the energy change
(:class:`~mlmd.saddle.trust_region.TrustRegion`), then taken back to Cartesian
(:meth:`~mlmd.saddle.internal.Coordinates.to_cartesian`); internal
coordinates that became singular (a straightened angle) are chosen afresh,
with the Hessian carried over through Cartesian. After each step
``H += φ ΔH_SR1 + (1 - φ) ΔH_PSB`` with ``ξ = Δg - H s``, ``φ = (ξ·s)² /
(|ξ|²|s|²)``. The initial Hessian is a Cartesian finite-difference one
(forward differences, one call per free non-rigid direction) when there are
at most :data:`FULL_HESSIAN_MAX` free coordinates, else ``c₀ (I - v vᵀ) + c v
vᵀ`` from the requested mode ``v`` and its finite-difference curvature ``c``
(one call; ``c₀`` = :data:`DEFAULT_CURVATURE`), transformed to ``q``.
Converged when the largest per-atom gradient is below ``fmax`` and the model
Hessian has exactly one negative eigenvalue, with a Cartesian curvature
``(Bv)ᵀ H_q (Bv)`` along the mode below ``-min_negative_curvature``.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import MLMDError
from .curvature import rigid_basis
from .dimer import max_atom_norm
from .internal import CartesianCoordinates, Coordinates, Frame, InternalCoordinates
from .methods import MethodOutcome, register_method
from .true_surface import EvaluationFailed, TooManyFailures
from .trust_region import TrustRegion
from .verify import rigid_motions, rigid_rows

#: free coordinates up to which the initial Hessian is a full finite-difference one
FULL_HESSIAN_MAX = 30
#: eV/Å²: curvature given to the directions other than the mode in the mode-guess initial Hessian
DEFAULT_CURVATURE = 10.0
#: curvature given to the directions no Cartesian step can make (rigid motions, redundancies)
STIFF_CURVATURE = 1e3


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


def prfo_step(H: np.ndarray, g: np.ndarray, follow: np.ndarray, oriented: bool = False):
    """``(step, followed unit direction, its curvature, number of negative eigenvalues)`` of one P-RFO step.

    The maximised direction is the eigenvector of ``H`` that overlaps most with
    ``follow`` when its eigenvalue is negative; otherwise (no negative
    curvature along the mode yet) it is ``follow`` itself, and the step
    minimises in the eigenvectors of ``H`` projected onto its complement.
    With no gradient along a maximised direction of positive curvature the
    step along it is the unit direction. The returned direction keeps the sign
    of ``follow``; with ``oriented`` the step along a maximised direction of
    positive curvature goes along ``+follow`` whatever the gradient's sign.
    """
    H = 0.5 * (H + H.T)
    b, U = np.linalg.eigh(H)
    negative = int((b < 0).sum())
    k = int(np.argmax(np.abs(U.T @ follow)))
    if b[k] < 0:
        others = np.delete(np.arange(len(b)), k)
        u = U[:, k] if float(U[:, k] @ follow) >= 0 else -U[:, k]  # eigh's sign is arbitrary: keep follow's
        c, b_others, U_others = float(b[k]), b[others], U[:, others]
    else:
        u = follow / np.linalg.norm(follow)
        complement = np.eye(len(u)) - np.outer(u, u)
        b_c, U_c = np.linalg.eigh(complement @ H @ complement)
        keep = np.delete(np.arange(len(b_c)), int(np.argmax(np.abs(U_c.T @ u))))
        c, b_others, U_others = float(u @ H @ u), b_c[keep], U_c[:, keep]
    F, F_others = float(u @ g), U_others.T @ g
    lam_p = 0.5 * c + np.sqrt(0.25 * c ** 2 + F ** 2)
    m = len(b_others)
    augmented = np.zeros((m + 1, m + 1))
    augmented[:m, :m] = np.diag(b_others)
    augmented[:m, m] = augmented[m, :m] = F_others
    lam_n = np.linalg.eigvalsh(augmented)[0]
    denominator = c - lam_p
    along = -F / denominator if abs(denominator) > 1e-12 else 1.0
    if oriented and c >= 0:
        along = abs(along)
    step = along * u
    denominators = b_others - lam_n
    ok = np.abs(denominators) > 1e-12
    step = step - U_others[:, ok] @ (F_others[ok] / denominators[ok])
    return step, u, c, negative


def make_coordinates(choice: str, atoms, free, x) -> Coordinates:
    """Internal coordinates for a molecule (``auto``: every atom free, at least two, no periodic cell), else
    Cartesian ones with the rigid motions projected out when they are symmetries."""
    rotations = rigid_motions(atoms, free)
    molecular = rotations is True
    if choice == "internal" and not molecular:
        raise MLMDError("internal coordinates need a molecule (every atom free, no periodic cell): use "
                        "--coordinates cartesian or auto")
    positions = np.asarray(x, dtype=float).reshape(-1, 3)
    if choice == "internal" or (choice == "auto" and molecular):
        return InternalCoordinates.from_atoms(atoms.numbers, positions)
    rigid = None if rotations is None else rigid_basis(positions, rotations)
    return CartesianCoordinates(len(x), rigid)


def directional_curvature_row(surface, x, g, v, step_A: float) -> np.ndarray:
    """``H v`` (eV/Å² · Å) by a forward difference of the gradient along unit ``v``; where that evaluation
    fails (an SCF), a backward one; where both fail, ``DEFAULT_CURVATURE v`` (a stiff guess the Bofill
    updates then correct) rather than ending the search before its first step."""
    for sign in (1.0, -1.0):
        try:
            return sign * (surface(x + sign * step_A * v, kind="image")[1] - g) / step_A
        except EvaluationFailed:
            continue
    return DEFAULT_CURVATURE * v


def initial_hessian(surface, x, g, mode, rigid, step_A: float) -> np.ndarray:
    """Cartesian finite-difference Hessian (small systems) or the mode guess (one call), rigid motions removed."""
    n = len(x)
    projector = np.eye(n) - (rigid.T @ rigid if rigid is not None else 0.0)
    if n <= FULL_HESSIAN_MAX:
        H = np.zeros((n, n))
        directions = np.linalg.eigh(projector)[1][:, -(n - (0 if rigid is None else len(rigid))):]
        for v in directions.T:
            H += np.outer(directional_curvature_row(surface, x, g, v, step_A), v)
        H = 0.5 * (H + H.T)
    else:
        curvature = float(directional_curvature_row(surface, x, g, mode, step_A) @ mode)
        H = DEFAULT_CURVATURE * np.eye(n) + (curvature - DEFAULT_CURVATURE) * np.outer(mode, mode)
    return projector @ H @ projector


@dataclass
class ModelStep:
    """One P-RFO step in the coordinates: ``dq``, the followed mode (in q and as a Cartesian unit vector),
    its Cartesian curvature (eV/Å²), the model's negative eigenvalues, ``g_q`` and the :class:`Frame`."""

    dq: np.ndarray
    follow: np.ndarray
    mode: np.ndarray
    curvature: float
    negative: int
    g_q: np.ndarray
    frame: Frame


def model_step(coords: Coordinates, x, g_x, H_q, follow, limit_A: float, oriented: bool = False) -> ModelStep:
    """P-RFO step on ``H_q`` and the gradient at ``x``, its first-order Cartesian image within ``limit_A`` Å
    (``oriented``: see :func:`prfo_step`)."""
    frame = coords.frame(x)
    g_q = coords.gradient(x, g_x, frame)
    P = frame.P
    H = P @ H_q @ P + STIFF_CURVATURE * (np.eye(len(P)) - P)
    projected = P @ follow
    dq, follow, _, negative = prfo_step(H, P @ g_q, projected / max(np.linalg.norm(projected), 1e-300), oriented)
    dq = P @ dq
    length = max_atom_norm(frame.Binv @ dq)
    if length > limit_A:
        dq = dq * (limit_A / length)
    mode = frame.Binv @ follow
    mode /= max(np.linalg.norm(mode), 1e-300)
    image = frame.B @ mode
    return ModelStep(dq, follow, mode, float(image @ H_q @ image), negative, g_q, frame)


def refresh_coordinates(coords: Coordinates, numbers, x, g_x, H_q, follow):
    """``(coords, H_q, follow)``, in primitives chosen afresh at ``x`` when ``coords`` became singular there
    (``H_q`` may be None: then None comes back)."""
    if not coords.degenerate(x):
        return coords, H_q, follow
    frame = coords.frame(x)
    fresh = InternalCoordinates.from_atoms(numbers, np.asarray(x).reshape(-1, 3))
    if H_q is not None:
        H_q = fresh.hessian(x, coords.cartesian_hessian(x, H_q, g_x, frame), g_x)
    return fresh, H_q, fresh.vector(x, frame.Binv @ follow)


@register_method("p-rfo", default_max_step_A=0.2,
                 summary="partitioned rational-function optimisation, Bofill updates; internal coordinates "
                 "for molecules, else Cartesian")
def prfo(start, surface, settings, say) -> MethodOutcome:
    """P-RFO from ``start.x0`` following ``start.mode``, up to ``settings.max_calls`` true evaluations."""
    x = np.asarray(start.x0, dtype=float).copy()
    coords = make_coordinates(settings.coordinates, start.atoms, start.free, x)
    energy, g = surface(x, kind="midpoint")
    trust = TrustRegion(lambda y: max_atom_norm(y - x), settings.max_step_A, settings.trust_min_A / 10.0,
                        settings.max_step_A, failure_min_limit=0.0, unit="Å")
    outcome = MethodOutcome(x=x, mode=np.asarray(start.mode, dtype=float), converged=False,
                            curvature=float("nan"), iterations=0, energy=energy, fmax=max_atom_norm(g), gradient=g)
    try:
        H_x = initial_hessian(surface, x, g, start.mode, rigid_rows(start.atoms, start.free, x), settings.separation_A)
        H_q = coords.hessian(x, H_x, g)
        follow = coords.vector(x, start.mode)
        while surface.calls < settings.max_calls:
            outcome.iterations += 1
            step = model_step(coords, x, g, H_q, follow, trust.limit, settings.oriented)
            follow, outcome.mode, outcome.curvature = step.follow, step.mode, step.curvature
            fmax_now = max_atom_norm(g)
            say(f"p-rfo {outcome.iterations:4d}  calls {surface.calls:5d}  E {energy: .6f} eV  fmax {fmax_now:.4f} "
                f"eV/Å  C {step.curvature: .4f} eV/Å²  negative {step.negative}  {coords.kind}  {trust.describe()}")
            if fmax_now < settings.fmax and step.negative == 1 and step.curvature < -settings.min_negative_curvature:
                outcome.converged = True
                break
            x_new = coords.to_cartesian(x, step.dq, step.frame)[0]
            dq = coords.difference(coords.values(x_new), coords.values(x))
            predicted = energy + float(step.g_q @ dq) + 0.5 * float(dq @ H_q @ dq)
            try:
                if not np.all(np.isfinite(x_new)):
                    raise EvaluationFailed("the step produced non-finite coordinates")
                energy_new, g_new = surface(x_new, kind="midpoint")
            except EvaluationFailed as exc:
                trust.on_failure()
                say(f"p-rfo: the potential failed ({exc}); staying at the last good point, {trust.describe()}")
                continue
            trust.update(predicted, energy_new, energy)
            H_q = bofill_update(H_q, dq, coords.gradient(x_new, g_new) - step.g_q)
            x, energy, g = x_new, energy_new, g_new
            coords, H_q, follow = refresh_coordinates(coords, start.atoms.numbers, x, g, H_q, follow)
            outcome.x, outcome.energy, outcome.gradient, outcome.fmax = x, energy, g, max_atom_norm(g)
    except TooManyFailures as exc:
        outcome.reason = str(exc)
    return outcome
