"""Saddle-point search: GP-dimer, OT-GP-dimer and the classical dimer (``mlmd.saddle.search``).

GP-dimer (Koistinen et al., J. Chem. Phys. 2019; J. Chem. Theory Comput. 2020):

1. Evaluate the true energy and gradient at the start ``x0`` and at the dimer
   image ``x0 + Δ N``. Initial rotations: fit the GP, rotate the dimer on the
   GP mean, and evaluate the true image at the new orientation until the GP
   rotates the mode by less than 5° (at most ``initial_rotations`` times; by
   default 5 for a random or displacement mode and none for a mode the user
   gives, which we measured to be better: GP rotations on 2-3 points can turn a
   good mode into a poor one).
2. Outer loop: fit the GP (MAP hyperparameters, warm-started), run the dimer
   (rotations + L-BFGS translations) on the GP mean from the last true point
   until its largest per-atom gradient is below
   ``max(min(true fmax so far) / 10, fmax / 10)``, or a step leaves the trust
   region (then the point is pulled back along the step to 2/3 of the trust
   limit and the inner loop ends); evaluate the true surface at the new
   midpoint.
3. Converged when the true largest per-atom gradient is below ``fmax`` (eV/Å)
   and a true evaluation of the image confirms negative curvature along the
   mode. Optionally relax down both sides of the mode to the two minima
   (ASE's FIRE on the true surface) and report the barrier.

Trust regions: ``gp-dimer`` uses the interatomic-distance ratio
``min_n max_pairs |log(r(x)/r(x_n))| <= trust_ratio`` of the original method;
``ot-gp-dimer`` uses the permutation-invariant optimal-transport distance
(:mod:`mlmd.saddle.distance`) to the nearest observation with an adaptive
radius: after each true evaluation the radius grows by 1.5 (to at most
``trust_max_A``) when the GP predicted the new energy to within a quarter of
the predicted energy change, and halves (to at least ``trust_min_A``) when the
error exceeded the predicted change. The ratio limit of ``gp-dimer`` is scaled by the
same rule (between 1/8 and 1 times ``trust_ratio``), and both shrink when the potential
cannot be evaluated at the proposed point (an SCF that fails to converge). ``ot-gp-dimer`` also prunes: the
hyperparameters are fitted on ``prune_size`` points (the ``prune_newest``
newest plus farthest-point samples under the OT distance); predictions use all
data. ``dimer`` is the classical dimer on the true surface, also used as the
fallback for one step whenever the GP cannot be fitted.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import MLMDError
from .dimer import dimer_search, effective_force, max_atom_norm, rotate, Translator
from .distance import ot_distances_to, pruned_subset

METHODS = ("gp-dimer", "ot-gp-dimer", "dimer")


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


def resolve_calculator(calculator=None, model=None, device: str = "cpu", atoms=None):
    """An ASE calculator from a name (``--calculator``), an mlmd model (``--model``) or the atoms' own."""
    if calculator is not None and model is not None:
        raise MLMDError("give either a calculator or a model, not both")
    if model is not None:
        from ..ase_calculator import MLMDCalculator

        return MLMDCalculator(model, device=device)
    if isinstance(calculator, str):
        from ..calculators import get_calculator

        return get_calculator(calculator)
    if calculator is not None:
        return calculator
    if atoms is not None and atoms.calc is not None:
        return atoms.calc
    raise MLMDError("no potential: give --model MODEL.pt or --calculator NAME (emt, lj, morse, gfn2, ...)")


def free_atoms(atoms, fixed: Optional[Sequence[int]] = None) -> np.ndarray:
    """Indices of atoms free to move: not in a FixAtoms constraint nor in ``fixed``."""
    from ase.constraints import FixAtoms

    mask = np.ones(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            mask[constraint.index] = False
    if fixed is not None:
        fixed = np.asarray(list(fixed), dtype=int)
        if len(fixed) and (fixed.min() < -len(atoms) or fixed.max() >= len(atoms)):
            raise MLMDError(f"fixed atom indices must be in 0..{len(atoms) - 1}; got {fixed.tolist()}")
        mask[fixed] = False
    free = np.flatnonzero(mask)
    if len(free) == 0:
        raise MLMDError("no free atoms: every atom is fixed; free some atoms (check the file's constraints "
                        "and --fix)")
    return free


def _initial_mode(mode, atoms, free, displacement: Optional[np.ndarray], rng) -> np.ndarray:
    """A unit vector over the free coordinates from an array, 'random' or 'displacement'."""
    D = 3 * len(free)
    if mode is None or (isinstance(mode, str) and mode == "random"):
        vector = rng.normal(size=D)
    elif isinstance(mode, str) and mode == "displacement":
        if displacement is None or not np.any(displacement):
            raise MLMDError("mode 'displacement' needs a displacement: give displace_A > 0 (--displace)")
        vector = displacement.ravel().copy()
    elif isinstance(mode, str):
        raise MLMDError(f"unknown mode {mode!r}: give an N x 3 array (a file numpy.loadtxt reads), "
                        "'random' or 'displacement'")
    else:
        array = np.asarray(mode, dtype=float)
        if array.shape == (len(atoms), 3):
            array = array[free]
        elif array.shape != (len(free), 3):
            raise MLMDError(f"the mode has shape {array.shape}, but the structure has {len(atoms)} atoms "
                            f"({len(free)} free): give one row of 3 numbers per atom")
        if not np.isfinite(array).all():
            raise MLMDError("the mode contains NaN or infinite values; give finite numbers")
        vector = array.ravel().copy()
    norm = np.linalg.norm(vector)
    if norm == 0:
        raise MLMDError("the mode is zero on the free atoms; give a mode that moves at least one free atom")
    return vector / norm


class _TrueSurface:
    """Energy (eV) and gradient (eV/Å) of the free coordinates, with a call log."""

    def __init__(self, atoms, calc, free, max_calls: int):
        self.atoms = atoms.copy()
        self.atoms.calc = calc
        self.free = free
        self.base = atoms.positions.copy()
        self.max_calls = max_calls
        self.history: List[Dict] = []
        self.seconds = 0.0
        self.best = None  # (fmax, x, energy, gradient) over evaluations that are not dimer images

    @property
    def calls(self) -> int:
        return len(self.history)

    def positions(self, x):
        pos = self.base.copy()
        pos[self.free] = np.asarray(x).reshape(-1, 3)
        return pos

    def __call__(self, x, kind: str = "midpoint"):
        start = time.perf_counter()
        from ase.calculators.calculator import CalculationFailed

        self.atoms.positions = self.positions(x)
        try:
            energy = float(self.atoms.get_potential_energy())
            gradient = -self.atoms.get_forces()[self.free].ravel()
        except CalculationFailed as exc:
            self.seconds += time.perf_counter() - start
            self.history.append({"call": self.calls + 1, "energy": float("nan"), "fmax": float("nan"),
                                 "kind": "failed"})
            raise _EvaluationFailed(str(exc)) from exc
        self.seconds += time.perf_counter() - start
        fmax = max_atom_norm(gradient)
        self.history.append({"call": self.calls + 1, "energy": energy, "fmax": fmax, "kind": kind})
        if not (np.isfinite(energy) and np.all(np.isfinite(gradient))):
            raise MLMDError(f"the potential returned NaN or infinite values at call {self.calls}; the search "
                            "left the region the potential handles: start closer to the saddle or use a smaller "
                            "--max-step")
        if kind != "image" and (self.best is None or fmax < self.best[0]):
            self.best = (fmax, np.array(x, dtype=float), energy, gradient.copy())
        return energy, gradient


class _OutOfCalls(Exception):
    pass


class _EvaluationFailed(Exception):
    """The potential could not be evaluated at a point (for example an SCF that did not converge)."""


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
    """
    from ..checks import check_atoms

    wall_start = time.perf_counter()
    if method not in METHODS:
        raise MLMDError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if fmax <= 0 or max_calls < 3:
        raise MLMDError("fmax must be positive and max_calls at least 3")
    check_atoms(atoms, source="start structure", min_distance=min_distance_A)
    free = free_atoms(atoms, fixed)
    calc = resolve_calculator(calculator, model, device="cpu" if device == "auto" else device, atoms=atoms)
    rng = np.random.default_rng(seed)
    start_atoms = atoms.copy()
    x0 = atoms.positions[free].ravel().copy()
    displacement = np.zeros_like(x0)
    if displace_A > 0:
        which = free if displace_atoms is None else np.intersect1d(free, np.asarray(list(displace_atoms), dtype=int))
        if len(which) == 0:
            raise MLMDError("displace_atoms names no free atom; list free atoms to displace")
        noise = rng.normal(scale=displace_A, size=(len(atoms), 3))
        chosen = np.isin(free, which)
        displacement = (noise[free] * chosen[:, None]).ravel()
    N = _initial_mode(mode, atoms, free, displacement, rng)
    if initial_rotations is None:
        # a mode the user gave is trusted; a random or displacement mode is first rotated
        initial_rotations = 5 if isinstance(mode, str) or mode is None else 0
    x0 = x0 + displacement
    moved = start_atoms.copy()
    moved.positions[free] = x0.reshape(-1, 3)
    check_atoms(moved, source="displaced start structure", min_distance=min_distance_A)
    surface = _TrueSurface(start_atoms, calc, free, max_calls)
    say = log or (lambda text: None)

    try:
        state, gp_s = _run_method(method, surface, start_atoms, free, x0, N, fmax, max_calls, separation_A,
                                  max_step_A, device, prune, prune_size, prune_newest, trust_ratio, trust_radius_A,
                                  trust_min_A, trust_max_A, initial_rotations, inner_iterations, pair_cutoff_A,
                                  min_negative_curvature, say)
    except _EvaluationFailed as exc:
        raise MLMDError(f"the potential could not be evaluated during the search ({exc}) after "
                        f"{surface.calls} calls; check the start structure and the potential's settings") from exc
    result = _finish(surface, start_atoms, free, state, method, fmax, gp_s, wall_start, x0)
    if relax and result.converged:
        _relax_both_sides(result, surface, start_atoms, free, x0, fmax)
    result.wall_s = time.perf_counter() - wall_start
    return result


def _run_method(method, surface, start_atoms, free, x0, N, fmax, max_calls, separation_A, max_step_A, device,
                prune, prune_size, prune_newest, trust_ratio, trust_radius_A, trust_min_A, trust_max_A,
                initial_rotations, inner_iterations, pair_cutoff_A, min_negative_curvature, say):
    if method == "dimer":
        state = _classical(surface, x0, N, fmax, max_calls, separation_A, max_step_A or 0.2, say,
                           min_negative_curvature)
        gp_s = 0.0
    else:
        import torch

        torch_device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        use_ot = method == "ot-gp-dimer"
        threads = torch.get_num_threads()
        if torch.device(torch_device).type == "cpu":
            # the GP's matrices are small: one CPU thread beats several that contend for cores
            torch.set_num_threads(1)
        try:
            state = _gp_dimer(surface, start_atoms, free, x0, N, fmax, max_calls, separation_A, max_step_A or 0.1,
                              torch_device, use_ot, use_ot if prune is None else prune, prune_size, prune_newest,
                              trust_ratio, trust_radius_A, trust_min_A, trust_max_A, initial_rotations,
                              inner_iterations, pair_cutoff_A, min_negative_curvature, say)
        finally:
            torch.set_num_threads(threads)
        gp_s = state["gp_s"]
    return state, gp_s


def _classical(surface, x0, N, fmax, max_calls, separation_A, max_step_A, say, min_negative_curvature):
    """The classical dimer on the true surface."""

    def true(x):
        if surface.calls >= max_calls:
            raise _OutOfCalls
        return surface(x, kind="dimer")

    def progress(iteration, x, energy, gradient, curvature):
        say(f"dimer {iteration:4d}  calls {surface.calls:5d}  E {energy: .6f} eV  fmax {max_atom_norm(gradient):.4f} "
            f"eV/Å  C {curvature: .4f} eV/Å²")

    out = {"x": x0, "mode": N, "converged": False, "curvature": float("nan"), "iterations": 0}
    try:
        out = dimer_search(true, x0, N, fmax=fmax, separation_A=separation_A, max_step_A=max_step_A,
                           max_calls=max_calls, callback=progress, min_negative_curvature=min_negative_curvature)
    except (_OutOfCalls, _EvaluationFailed):
        pass
    return {"x": out["x"], "mode": out["mode"], "converged": out["converged"], "curvature": out["curvature"],
            "iterations": out["iterations"], "energy": out.get("energy"),
            "fmax": max_atom_norm(out["gradient"]) if "gradient" in out else None}


def _gp_dimer(surface, atoms, free, x0, N, fmax, max_calls, separation_A, max_step_A, device, use_ot, prune,
              prune_size, prune_newest, trust_ratio, trust_radius_A, trust_min_A, trust_max_A,
              initial_rotations, inner_iterations, pair_cutoff_A, min_negative_curvature, say):
    import torch

    from .gp import GaussianProcess
    from .kernel import DTYPE, make_features

    gp_seconds = 0.0
    features = make_features(atoms, free, cutoff_A=pair_cutoff_A, device=device)
    gp = GaussianProcess(features)
    numbers = atoms.numbers[free]
    radius = trust_radius_A

    def observe(x, kind):
        energy, gradient = surface(x, kind=kind)
        gp.add(x, energy, gradient)
        return energy, gradient

    def fit():
        nonlocal gp_seconds
        start = time.perf_counter()
        subset = None
        if prune and len(gp) > prune_size:
            subset = pruned_subset(np.array(gp.X), numbers, prune_size, prune_newest)
        gp.fit(subset=subset)
        gp_seconds += time.perf_counter() - start

    def gp_surface(x):
        energy, gradient = gp.predict(x)
        return float(energy[0]), gradient[0]

    def trust_distance(x):
        if use_ot:
            return float(ot_distances_to(x, np.array(gp.X), numbers).min())
        with torch.no_grad():
            f, _ = features(torch.as_tensor(np.atleast_2d(x), dtype=DTYPE, device=features.device))
            return float(features.log_distance_ratio(f, gp._f).min())

    shrink = 1.0

    def limit():
        return radius if use_ot else shrink * trust_ratio

    def accept(x_old, x_new):
        """Keep a step inside the trust region; else pull it back to 2/3 of the limit and stop."""
        if trust_distance(x_new) <= limit():
            return x_new, False
        target = (2.0 / 3.0) * limit()
        lo, hi = 0.0, 1.0
        if trust_distance(x_old) > target:
            return x_old, True
        for _ in range(20):
            mid = 0.5 * (lo + hi)
            if trust_distance(x_old + mid * (x_new - x_old)) <= target:
                lo = mid
            else:
                hi = mid
        return x_old + lo * (x_new - x_old), True

    converged = False
    curvature = float("nan")
    iteration = 0
    x = x0.copy()
    try:
        energy, g = observe(x, "midpoint")
        g1 = observe(x + separation_A * N, "image")[1]
        # initial rotations: the GP rotates, the true surface is evaluated at the new image
        for _ in range(initial_rotations):
            fit()
            start = time.perf_counter()
            g_gp = gp_surface(x)[1]
            new_N, _, _, _, _ = rotate(gp_surface, x, g_gp, N, separation_A, max_rotations=20)
            gp_seconds += time.perf_counter() - start
            turned = abs(float(new_N @ N))
            N = new_N
            if turned > math.cos(math.radians(5)) or surface.calls >= max_calls:
                break
            observe(x + separation_A * N, "image")
        min_fmax = max_atom_norm(g)
        while surface.calls < max_calls:
            iteration += 1
            fallback = False
            try:
                fit()
                start = time.perf_counter()
                threshold = max(min_fmax / 10.0, fmax / 10.0)
                inner = dimer_search(gp_surface, x, N, fmax=threshold, separation_A=separation_A,
                                     max_iterations=inner_iterations, max_step_A=max_step_A, accept=accept,
                                     max_rotations=20, min_negative_curvature=min_negative_curvature)
                gp_seconds += time.perf_counter() - start
                if not np.all(np.isfinite(inner["x"])) or not np.all(np.isfinite(inner["mode"])):
                    raise torch.linalg.LinAlgError("GP dimer produced non-finite coordinates")
                x_new, N, gp_curvature = inner["x"], inner["mode"], inner["curvature"]
                predicted = gp_surface(x_new)[0]
            except torch.linalg.LinAlgError:
                fallback = True
            if fallback:
                # the GP misbehaves: one classical dimer step on the true surface
                N, gp_curvature, _, _, _ = rotate(lambda y: surface(y, kind="image"), x, g, N, separation_A,
                                                  max_rotations=3)
                x_new = x + Translator(max_step_A=max_step_A).step(x, effective_force(g, N, gp_curvature),
                                                                    gp_curvature)
                predicted = None
            if np.min(np.linalg.norm(np.array(gp.X) - x_new, axis=1)) < 1e-8:
                # the GP has nothing new to say here: learn the curvature along the mode instead
                observe(x + separation_A * N, "image")
                continue
            previous_energy = energy
            try:
                energy, g = observe(x_new, "midpoint")
            except _EvaluationFailed as exc:
                # the potential failed where the GP sent us: shrink the trust region and step half as far
                shrink *= 0.5
                radius = max(0.5 * radius, trust_min_A)
                say(f"outer {iteration:3d}  the potential failed at the proposed point ({exc}); "
                    "halving the trust region")
                continue
            x = x_new
            fmax_now = max_atom_norm(g)
            min_fmax = min(min_fmax, fmax_now)
            if predicted is not None:
                error = abs(predicted - energy)
                change = max(abs(predicted - previous_energy), 1e-3)
                if error < 0.25 * change:
                    radius = min(1.5 * radius, trust_max_A)
                    shrink = min(1.0, 1.5 * shrink)
                elif error > change:
                    radius = max(0.5 * radius, trust_min_A)
                    shrink = max(0.5 * shrink, 0.125)
            say(f"outer {iteration:3d}  calls {surface.calls:4d}  E {energy: .6f} eV  fmax {fmax_now:.4f} eV/Å  "
                f"C_gp {gp_curvature: .4f} eV/Å²  data {len(gp):3d}  gp {gp_seconds:.2f} s"
                + (f"  trust {radius:.2f} Å" if use_ot else f"  trust {shrink * trust_ratio:.3f}") + ("  (classical fallback)" if fallback else ""))
            if fmax_now < fmax and surface.calls < max_calls:
                g1 = observe(x + separation_A * N, "image")[1]
                curvature = float((g1 - g) @ N) / separation_A
                if curvature < -min_negative_curvature:
                    converged = True
                    break
                say(f"outer {iteration:3d}  curvature along the mode is {curvature:.4f} eV/Å² (not negative): "
                    "continuing")
    except _OutOfCalls:
        pass
    return {"x": x, "mode": N, "converged": converged, "curvature": curvature, "iterations": iteration,
            "gp_s": gp_seconds, "energy": energy, "fmax": max_atom_norm(g)}


def _finish(surface, start_atoms, free, state, method, fmax, gp_s, wall_start, x0):
    x = state["x"]
    converged = state["converged"]
    if converged:
        energy, fmax_final = state["energy"], state["fmax"]
        message = f"converged: saddle confirmed (fmax below {fmax} eV/Å, negative curvature along the mode)"
    else:
        if surface.best is not None:
            fmax_final, x, energy, _ = surface.best
        else:
            energy, fmax_final = float("nan"), float("nan")
        message = (f"not converged within {surface.calls} force calls; kept the structure with the smallest "
                   f"gradient (fmax {fmax_final:.4f} eV/Å): raise --max-calls or start closer to the saddle")
    atoms = start_atoms.copy()
    atoms.positions = surface.positions(x)
    mode = np.zeros((len(atoms), 3))
    mode[free] = np.asarray(state["mode"]).reshape(-1, 3)
    return SaddleResult(atoms=atoms, mode=mode, converged=converged, energy=energy, curvature=state["curvature"],
                        fmax=fmax_final, force_calls=surface.calls, wall_s=time.perf_counter() - wall_start,
                        gp_s=gp_s, method=method, message=message, history=surface.history,
                        iterations=state["iterations"])


def _relax_both_sides(result, surface, start_atoms, free, x0, fmax, step_A: float = 0.1, max_steps: int = 1000):
    """Relax from saddle ± step along the mode to the two minima; barrier from the start side.

    FIRE (ASE) rather than a quasi-Newton optimiser: started next to a saddle, BFGS and
    L-BFGS can stall on the ridge, FIRE only goes downhill.
    """
    from ase.constraints import FixAtoms
    from ase.optimize import FIRE

    x_saddle = result.atoms.positions[free].ravel()
    mode = result.mode[free].ravel()
    minima = []
    for sign in (+1, -1):
        atoms = start_atoms.copy()
        atoms.set_constraint(FixAtoms(indices=np.setdiff1d(np.arange(len(atoms)), free)))
        atoms.positions[free] = (x_saddle + sign * step_A * mode).reshape(-1, 3)
        atoms.calc = surface.atoms.calc
        calls = [0]

        def count():
            calls[0] += 1

        optimizer = FIRE(atoms, logfile=None)
        optimizer.attach(count)
        optimizer.run(fmax=max(fmax, 0.005), steps=max_steps)
        x_min = atoms.positions[free].ravel()
        minima.append({"side": sign, "energy": float(atoms.get_potential_energy()), "calls": calls[0],
                       "converged": bool(max_atom_norm(atoms.get_forces()[free].ravel()) < max(fmax, 0.005)),
                       "projection_A": float((x_min - x_saddle) @ mode)})
    start_side = +1 if float((x0 - x_saddle) @ mode) >= 0 else -1
    first = next(m for m in minima if m["side"] == start_side)
    other = next(m for m in minima if m["side"] != start_side)
    result.minima = [first, other]
    result.barrier = result.energy - first["energy"]
    result.reverse_barrier = result.energy - other["energy"]
    result.relax_calls = sum(m["calls"] for m in minima)
    if not all(m["converged"] for m in minima):
        result.message += f"; a relaxation to a minimum did not converge in {max_steps} steps (barrier approximate)"
