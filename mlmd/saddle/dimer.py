"""The classical dimer method (Henkelman & Jónsson 1999; rotations after Heyden et al. 2005).

A dimer is a midpoint ``x`` (Å) and a unit mode ``N``; the image sits at
``x + Δ N`` (Δ = ``separation_A``). With ``g0 = ∇E(x)`` and ``g1 = ∇E(x + Δ N)``
(eV/Å) the curvature along the mode is ``C = (g1 - g0)·N / Δ`` (eV/Å²).

Rotation: the rotational force ``F⊥ = -((g1 - g0)/Δ)⊥N`` points to lower
curvature; one trial rotation by ``φ1 = ½ atan(|F⊥| / |C|)`` fits
``C(φ) = a0/2 + a1 cos 2φ + b1 sin 2φ`` and rotates to its minimum
(one gradient evaluation per rotation step; the image gradient at the new
angle is interpolated). Translation: the effective force
``F† = F - 2 (F·N) N`` for ``C < 0`` and ``F† = -(F·N) N`` for ``C ≥ 0``
(F = -g0), followed with L-BFGS and a maximum step length.

The same code runs on the true surface and on the GP mean: a *surface* is
any callable ``x -> (energy eV, gradient eV/Å)`` on flattened coordinates,
NumPy arrays or torch tensors. With tensors every vector stays where the
surface puts it (the GP's device): only scalars (angles, norms, convergence
tests) reach the host, so a GPU runs the inner loop without copying arrays.
"""

import math
from typing import Callable, Optional, Tuple

import numpy as np

Surface = Callable[[np.ndarray], Tuple[float, np.ndarray]]

#: after a failed evaluation the largest step halves; each good step lets it grow back by this factor
GROW_AFTER_SUCCESS = 1.5


def max_atom_norm(vector) -> float:
    """Largest per-atom Euclidean norm of a flattened [n*3] vector (ASE's fmax measure)."""
    if _is_tensor(vector):
        return float(vector.reshape(-1, 3).norm(dim=1).max())
    return float(np.linalg.norm(np.asarray(vector).reshape(-1, 3), axis=1).max())


def _is_tensor(vector) -> bool:
    return hasattr(vector, "detach")  # a torch tensor, without importing torch for NumPy callers


def _norm(vector) -> float:
    return float(vector.norm()) if _is_tensor(vector) else float(np.linalg.norm(vector))


def _copy(vector):
    return vector.clone() if _is_tensor(vector) else np.array(vector, dtype=float)


def _finite(value) -> bool:
    if _is_tensor(value):
        return bool(value.isfinite().all())
    return bool(np.all(np.isfinite(value)))


def without_rigid(vector, rigid):
    """``vector`` less its components along the orthonormal rows of ``rigid`` (rigid motions; None: as is)."""
    if rigid is None:
        return vector
    return vector - rigid.T @ (rigid @ vector)


def rotate(surface: Surface, x: np.ndarray, g0: np.ndarray, mode: np.ndarray, separation_A: float,
           g1: Optional[np.ndarray] = None, max_rotations: int = 10, angle_tolerance_rad: float = math.radians(5),
           force_tolerance: float = 0.0, rigid=None):
    """Rotate the dimer at ``x`` towards the lowest-curvature mode outside the span of the rows of ``rigid``
    (rigid motions, see :func:`dimer_search`; None: every direction).

    Returns ``(mode, curvature eV/Å², image_gradient, evaluations, last_angle_rad)``.
    """
    N = without_rigid(mode, rigid)
    N = N / _norm(N)
    calls = 0
    if g1 is None:
        g1 = surface(x + separation_A * N)[1]
        calls += 1
    angle = 0.0
    C = float((g1 - g0) @ N) / separation_A
    for _ in range(max_rotations):
        hn = (g1 - g0) / separation_A  # ≈ H N
        C = float(hn @ N)
        f_perp = without_rigid(-(hn - C * N), rigid)
        f_norm = _norm(f_perp)
        if f_norm <= max(force_tolerance, 1e-12):
            angle = 0.0
            break
        theta = f_perp / f_norm
        phi1 = 0.5 * math.atan(f_norm / max(abs(C), 1e-12))
        if phi1 < angle_tolerance_rad:
            angle = phi1
            break
        n1 = N * math.cos(phi1) + theta * math.sin(phi1)
        g1_trial = surface(x + separation_A * n1)[1]
        calls += 1
        c1 = float((g1_trial - g0) @ n1) / separation_A
        b1 = -f_norm  # ½ dC/dφ at φ = 0
        a1 = (C - c1 + b1 * math.sin(2 * phi1)) / (1 - math.cos(2 * phi1))
        a0 = 2 * (C - a1)
        phi_min = 0.5 * math.atan2(b1, a1) if a1 != 0 else math.pi / 4
        c_min = 0.5 * a0 + a1 * math.cos(2 * phi_min) + b1 * math.sin(2 * phi_min)
        if c_min > C:
            phi_min += 0.5 * math.pi
            c_min = 0.5 * a0 + a1 * math.cos(2 * phi_min) + b1 * math.sin(2 * phi_min)
        if phi_min > 0.5 * math.pi:
            phi_min -= math.pi
        new_N = N * math.cos(phi_min) + theta * math.sin(phi_min)
        new_N = new_N / _norm(new_N)
        g1 = (g0 + math.sin(phi1 - phi_min) / math.sin(phi1) * (g1 - g0)
              + math.sin(phi_min) / math.sin(phi1) * (g1_trial - g0))
        N, C = new_N, c_min
        angle = abs(phi_min)
        if angle < angle_tolerance_rad:
            break
    return N, C, g1, calls, angle


def effective_force(g0: np.ndarray, mode: np.ndarray, curvature: float, heading=None) -> np.ndarray:
    """Minimum-mode-inverted force (eV/Å) that a saddle search climbs along: ``F - 2 (F·N) N`` where the
    curvature is negative, else ``-(F·N) N``, uphill along the mode on whichever side of the minimum the
    point lies. With a ``heading`` (a direction, towards a given product), where the curvature is positive
    it climbs along ``±N``, the sign that moves along the heading, whatever that side."""
    force = -g0
    along = float(force @ mode)
    if curvature < 0:
        return force - 2 * along * mode
    if heading is not None:
        return max(abs(along), 1e-12) * (1.0 if float(mode @ heading) >= 0 else -1.0) * mode
    return -along * mode


class Translator:
    """L-BFGS on the effective force with a maximum step length (Å)."""

    def __init__(self, max_step_A: float = 0.2, memory: int = 10, initial_curvature: float = 10.0):
        self.max_step_A = max_step_A
        self.memory = memory
        self.initial_curvature = initial_curvature  # eV/Å²: first step = F† / this
        self.reset()

    def reset(self):
        self.s, self.y = [], []
        self._x = None
        self._f = None

    def step(self, x: np.ndarray, f_eff: np.ndarray, curvature: float) -> np.ndarray:
        """Displacement (Å) from ``x`` given the effective force there."""
        if curvature >= 0:
            self.reset()
            norm = _norm(f_eff)
            return self.max_step_A * f_eff / norm if norm > 0 else 0 * x
        if self._x is not None:
            s = x - self._x
            y = -(f_eff - self._f)
            if float(s @ y) > 1e-12 * _norm(s) * _norm(y) + 1e-18:
                self.s.append(s)
                self.y.append(y)
                if len(self.s) > self.memory:
                    self.s.pop(0)
                    self.y.pop(0)
            else:
                self.s, self.y = [], []
        q = -_copy(f_eff)
        alphas = []
        for s, y in zip(reversed(self.s), reversed(self.y)):
            rho = 1.0 / float(y @ s)
            a = rho * float(s @ q)
            alphas.append((rho, a))
            q -= a * y
        if self.s:
            gamma = float(self.s[-1] @ self.y[-1]) / float(self.y[-1] @ self.y[-1])
        else:
            gamma = 1.0 / max(abs(curvature), self.initial_curvature)
        r = gamma * q
        for (s, y), (rho, a) in zip(zip(self.s, self.y), reversed(alphas)):
            b = rho * float(y @ r)
            r += (a - b) * s
        step = -r
        if float(step @ f_eff) <= 0:  # not uphill on the effective surface: restart from steepest ascent
            self.s, self.y = [], []
            step = f_eff / max(abs(curvature), self.initial_curvature)
        length = max_atom_norm(step)
        if length > self.max_step_A:
            step = step * (self.max_step_A / length)
        self._x = _copy(x)
        self._f = _copy(f_eff)
        return step


class CountingSurface:
    """Wraps a surface and counts its evaluations."""

    def __init__(self, surface: Surface):
        self.surface = surface
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return self.surface(x)


def dimer_search(surface: Surface, x: np.ndarray, mode: np.ndarray, fmax: float = 0.01, separation_A: float = 0.01,
                 max_iterations: int = 1000, max_calls: Optional[int] = None, max_step_A: float = 0.2,
                 max_rotations: int = 10, angle_tolerance_rad: float = math.radians(5),
                 accept: Optional[Callable] = None, callback: Optional[Callable] = None,
                 energy0: Optional[float] = None, g0: Optional[np.ndarray] = None,
                 min_negative_curvature: float = 1e-3, failures: tuple = (), heading=None, rigid=None,
                 on_failure: Optional[Callable] = None):
    """Run the dimer from ``x`` along ``mode`` until max per-atom |∇E| < ``fmax`` (eV/Å) with C < 0.

    ``accept(x_old, x_new) -> (x, stop)`` may shorten a step and end the run (a
    trust region); ``callback(iteration, x, energy, gradient, curvature)`` sees
    every iteration. A curvature counts as negative below ``-min_negative_curvature``
    (eV/Å²), so flat regions are not taken for saddles. An exception of a type in
    ``failures`` raised by ``surface`` (a failed evaluation) sends the dimer back
    to the last good midpoint before the current one with half the largest step
    and a fresh L-BFGS memory, after ``on_failure(exception)``; each good step
    then lets the largest step grow back by 1.5, up to ``max_step_A``. ``heading``: where the curvature is
    positive, climb along the side of the mode it points to (:func:`effective_force`). ``rigid``: orthonormal
    rows [k, n] of rigid motions (a free molecule's translations and rotations), removed from the mode and the
    step; without that, near a minimum their zero curvature is the lowest and the dimer turns onto them.
    Returns a dict with x, mode, energy, gradient, curvature, converged, evaluations, iterations.
    """
    counted = CountingSurface(surface)
    x = _copy(x)
    N = _copy(mode) / _norm(mode)
    if g0 is None:
        energy0, g0 = counted(x)
    energy = energy0
    translator = Translator(max_step_A=max_step_A)
    converged = False
    curvature = float("nan")
    iteration = 0
    stopped = False
    previous = (x, energy, g0)  # the last good midpoint before the current one
    rotated_here = False  # after a failed translation the dimer at x keeps its orientation
    for iteration in range(1, max_iterations + 1):
        try:
            if not rotated_here:
                N, curvature, _, _, _ = rotate(counted, x, g0, N, separation_A, max_rotations=max_rotations,
                                               angle_tolerance_rad=angle_tolerance_rad, rigid=rigid)
        except failures as exc:
            x, energy, g0 = previous
            _back_off(translator, on_failure, exc)
            continue
        rotated_here = True
        if callback is not None:
            callback(iteration, x, energy, g0, curvature)
        if curvature < -min_negative_curvature and max_atom_norm(g0) < fmax:
            converged = True
            break
        if max_calls is not None and counted.calls >= max_calls:
            break
        climbing = curvature if curvature < -min_negative_curvature else abs(curvature) + min_negative_curvature
        step = translator.step(x, without_rigid(effective_force(g0, N, climbing, heading), rigid), climbing)
        x_new = x + step
        if accept is not None:
            x_new, stopped = accept(x, x_new)
        try:
            energy_new, g_new = counted(x_new)
        except failures as exc:
            _back_off(translator, on_failure, exc)
            continue
        previous = (x, energy, g0)
        x, energy, g0 = x_new, energy_new, g_new
        rotated_here = False
        translator.max_step_A = min(GROW_AFTER_SUCCESS * translator.max_step_A, max_step_A)
        if stopped or not _finite(energy) or not _finite(g0):
            break
    return {"x": x, "mode": N, "energy": energy, "gradient": g0, "curvature": curvature, "converged": converged,
            "evaluations": counted.calls, "iterations": iteration, "stopped": stopped}


def _back_off(translator: Translator, on_failure: Optional[Callable], exc: Exception) -> None:
    """After a failed evaluation: half the largest step and a fresh L-BFGS memory."""
    translator.max_step_A *= 0.5
    translator.reset()
    if on_failure is not None:
        on_failure(exc)
