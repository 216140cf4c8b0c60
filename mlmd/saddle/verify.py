"""Verification of a converged end point before it is called a saddle.

A search converges when the largest per-atom gradient is small and one
curvature along the method's mode is negative; that also holds at
second-order saddles, in fragmented structures and at saddles of another
reaction. :func:`verify_saddle` checks the end point five ways and reports
each as a :class:`Check` (``ok``, a value, the threshold, a one-line
``detail``):

- ``hessian_index``: exactly one curvature below ``-curvature_tolerance``
  (eV/Å²) and none near zero from below, from the Davidson estimate of
  :mod:`mlmd.saddle.curvature` (at most ``verify_max_calls`` true calls;
  rigid translations and rotations removed when every atom is free, more
  than one atom moves and the cell is not periodic; translations only for a
  periodic cell);
- ``fragments``: the bonded graph (pairs closer than ``bond_factor`` x the
  sum of ASE's covalent radii) has as many connected components at the end
  as at the start; bonds broken and formed are listed;
- ``bond_stretch``: every atom bonded at the start keeps a neighbour within
  ``max_bond_stretch`` x the covalent bond length (an atom pulled away from
  everything, like a C-H stretched to 1.7 Å, fails);
- ``energy_above_start`` (eV): at most ``max_barrier_eV``; an end point
  more than 10 meV below the start only warns (a rattled or displaced start
  may lie above the saddle it leads to);
- ``displacement`` (Å): largest atom displacement from the start (after
  removing a rigid motion when rigid motions are projected) at most
  ``max_displacement_A``; the RMS displacement is reported too;
- ``mode_overlap``: ``|cos|`` between the final mode and the requested one
  at least ``min_mode_overlap`` (only when a mode was given; a warning, not a failure).

With ``relax``, :func:`connection_check` adds ``connects_to_start``: one of
the two minima the saddle relaxes to lies within ``connect_tolerance_A`` (Å,
largest atom displacement, rigid motion removed) of the minimum the start
relaxes to; otherwise the saddle belongs to another reaction.
"""

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .curvature import lowest_curvatures, rigid_basis
from .true_surface import EvaluationFailed, TooManyFailures

#: a saddle more than this (eV) below the start is not a barrier out of the start's basin
BELOW_START_TOLERANCE_EV = 0.01


@dataclass
class Check:
    """One verification: name, whether it passed, its value and threshold, a one-line ``detail``, and whether
    its failure makes the saddle unverified (``fatal``) or only warns."""

    name: str
    ok: bool
    value: object
    threshold: object
    detail: str
    fatal: bool = True  # a failed check that is not fatal is a warning only


@dataclass
class Verification:
    """Every :class:`Check` of an end point and the true calls they cost (``calls``)."""

    checks: List[Check] = field(default_factory=list)
    calls: int = 0
    extra: Dict = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> List[Check]:
        """The failed checks that make the end point unverified."""
        return [c for c in self.checks if c.fatal and not c.ok]

    @property
    def warned(self) -> List[Check]:
        """Every failed check, fatal or not."""
        return [c for c in self.checks if not c.ok]

    def reasons(self) -> str:
        """The failed checks' details joined by '; '."""
        return "; ".join(c.detail for c in self.failed)

    def summary(self) -> Dict:
        """JSON-ready: verified, calls, and each check by name."""
        return {"verified": self.verified, "calls": int(self.calls),
                "checks": {c.name: _plain(asdict(c)) for c in self.checks}, **_plain(self.extra)}


def _plain(value):
    """``value`` with numpy scalars and arrays turned into JSON types."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def rigid_motions(atoms, free) -> Optional[bool]:
    """None when rigid motions are not symmetries; False for translations only (periodic); True for both.

    Rigid motions are removed only when every atom is free and there are at
    least two (a lone atom in a model field such as Müller-Brown is not
    translation invariant).
    """
    if len(free) != len(atoms) or len(atoms) < 2:
        return None
    return not atoms.pbc.any()


def rigid_rows(atoms, free, positions) -> Optional[np.ndarray]:
    """Orthonormal rows spanning the rigid motions of ``positions`` (Å, [n, 3] or flat) that are symmetries
    of ``atoms`` with these ``free`` atoms (:func:`rigid_motions`), or None when none are."""
    rotations = rigid_motions(atoms, free)
    return None if rotations is None else rigid_basis(np.reshape(positions, (-1, 3)), rotations)


def bonds(atoms, factor: float):
    """Bonded pairs ``{(i, j), i < j}`` closer than ``factor`` x the sum of covalent radii (periodic images too)."""
    from ase.neighborlist import NeighborList, natural_cutoffs

    nl = NeighborList(natural_cutoffs(atoms, mult=factor), self_interaction=False, bothways=False, skin=0.0)
    nl.update(atoms)
    pairs = set()
    for i in range(len(atoms)):
        for j in nl.get_neighbors(i)[0]:
            if i != j:
                pairs.add((min(i, int(j)), max(i, int(j))))
    return pairs


def fragment_count(n_atoms: int, pairs) -> int:
    """Connected components of the graph with ``pairs`` as edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = [i for i, _ in pairs]
    cols = [j for _, j in pairs]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_atoms, n_atoms))
    return int(connected_components(graph, directed=False)[0])


def _label(atoms, i) -> str:
    return f"{atoms[i].symbol}{i}"


#: a bond of the start counts as kept at the end up to this many times its covalent length
TRANSITION_BOND_FACTOR = 1.35


def graph_checks(start, end, settings) -> List[Check]:
    """``fragments`` and ``bond_stretch`` of ``end`` against ``start`` (same atoms, positions in Å)."""
    from ase.data import covalent_radii

    before = bonds(start, settings.bond_factor)
    # A start bond still within TRANSITION_BOND_FACTOR x its covalent length is half-broken, not broken: at a
    # saddle the bonds being exchanged sit there (malonaldehyde's transferring proton is 1.24x from both O).
    radii = covalent_radii[end.numbers]
    kept = {(i, j) for i, j in before
            if end.get_distance(i, j, mic=True) <= TRANSITION_BOND_FACTOR * (radii[i] + radii[j])}
    after = bonds(end, settings.bond_factor) | kept
    n_before, n_after = fragment_count(len(start), before), fragment_count(len(end), after)
    broken = sorted(before - after)
    formed = sorted(after - before)
    changes = ", ".join([f"{_label(end, i)}-{_label(end, j)} broken" for i, j in broken]
                        + [f"{_label(end, i)}-{_label(end, j)} formed" for i, j in formed]) or "none"
    fragments = Check("fragments", n_before == n_after, {"start": n_before, "end": n_after,
                                                         "broken": broken, "formed": formed}, n_before,
                      f"fragmented: {n_before} -> {n_after} bonded fragments (bond changes: {changes})"
                      if n_before != n_after else f"{n_after} bonded fragment(s) as at the start "
                      f"(bond changes: {changes})")
    bonded = {i for pair in before for i in pair}
    reach = {i for pair in bonds(end, settings.max_bond_stretch) for i in pair}
    stranded = sorted(bonded - reach)
    worst = []
    for i in stranded:
        others = np.delete(np.arange(len(end)), i)
        d = end.get_distances(i, others, mic=True)
        ratio = d / (covalent_radii[end.numbers[i]] + covalent_radii[end.numbers[others]])
        k = int(np.argmin(ratio))
        worst.append(f"{_label(end, i)} is {d[k]:.2f} Å from its nearest atom {_label(end, int(others[k]))} "
                     f"({ratio[k]:.2f}x the covalent bond length)")
    stretch = Check("bond_stretch", not stranded, stranded, settings.max_bond_stretch,
                    "stretched bond: " + "; ".join(worst) if stranded else
                    f"every atom bonded at the start keeps a neighbour within {settings.max_bond_stretch}x "
                    "its covalent bond length")
    return [fragments, stretch]


def index_check(curvatures, tolerance: float) -> Check:
    """``hessian_index`` from :class:`~mlmd.saddle.curvature.Curvatures`: one value below -tolerance, the next above."""
    values = curvatures.values
    negative = int((values < -tolerance).sum())
    second = float(values[1]) if len(values) > 1 else float("inf")
    ok = values[0] < -tolerance and second > -tolerance
    how = (f"{curvatures.calls} calls, {'every' if curvatures.complete else 'a subspace of the'} "
           f"{curvatures.dimension} free directions")
    if ok:
        detail = f"one negative curvature {values[0]:.4f} eV/Å², next {second:.4f} eV/Å² ({how})"
    elif negative >= 2:
        detail = (f"Hessian index >= 2: curvatures {values[0]:.4f} and {second:.4f} eV/Å² (a higher-order "
                  f"saddle; {how})")
    elif values[0] >= -tolerance:
        detail = (f"Hessian index 0: lowest curvature {values[0]:.4f} eV/Å² is not negative (a minimum or a "
                  f"flat region, not a saddle; {how})")
    else:
        detail = (f"Hessian index unclear: second curvature {second:.4f} eV/Å² lies within the tolerance "
                  f"{tolerance} of zero ({how})")
    return Check("hessian_index", bool(ok), [float(v) for v in values], -tolerance, detail)


def energy_check(surface, x0, energy: float, settings) -> Check:
    """``energy_above_start``: ``energy`` (eV) less the start's, at most ``max_barrier_eV`` (below -10 meV: a warning)."""
    try:
        above = float(energy - surface.energy_at(x0, kind="verify"))
    except (EvaluationFailed, TooManyFailures) as exc:
        return Check("energy_above_start", False, None, settings.max_barrier_eV,
                     f"energy above the start unknown: the potential failed at the start ({exc})")
    if above < -BELOW_START_TOLERANCE_EV:
        return Check("energy_above_start", False, above, settings.max_barrier_eV,
                     f"{above:.4f} eV above the start (below the start: the start is not near a minimum, or this "
                     "is not a barrier out of its basin)", fatal=False)
    ok = above <= settings.max_barrier_eV
    why = "" if ok else f" (more than {settings.max_barrier_eV} eV: an unlikely barrier)"
    return Check("energy_above_start", ok, above, settings.max_barrier_eV, f"{above:.4f} eV above the start{why}")


def displacement_check(end, start, free, rotations: Optional[bool], settings) -> Check:
    """``displacement``: largest and RMS displacement (Å) of the free atoms from ``start`` (rigid motion removed)."""
    per_atom = np.linalg.norm(_aligned(end, start, rotations)[free] - start.positions[free], axis=1)
    far = int(np.argmax(per_atom))
    rms = float(np.sqrt((per_atom ** 2).mean()))
    ok = per_atom[far] <= settings.max_displacement_A
    why = "" if ok else f" (more than {settings.max_displacement_A} Å: far from the start)"
    return Check("displacement", bool(ok), {"max_A": float(per_atom[far]), "rms_A": rms, "atom": int(free[far])},
                 settings.max_displacement_A,
                 f"moved {per_atom[far]:.2f} Å at most ({_label(end, int(free[far]))}), RMS {rms:.2f} Å{why}")


def connection_check(target_minimum, minima, free, rotations: Optional[bool], tolerance_A: float,
                     target: str = "start") -> Check:
    """``connects_to_<target>``: the largest free-atom displacement (Å) of each of the saddle's two ``minima``
    from ``target_minimum`` (the relaxed start, or the relaxed product; rigid motion removed); passes when the
    smaller is at most ``tolerance_A``."""
    distances = [float(np.linalg.norm(_aligned(minimum, target_minimum, rotations)[free]
                                      - target_minimum.positions[free], axis=1).max()) for minimum in minima]
    ok = min(distances) <= tolerance_A
    sides = " and ".join(f"{d:.2f}" for d in distances)
    named = "the start's minimum" if target == "start" else "the given product"
    detail = (f"one side relaxes to {named} ({min(distances):.3f} Å from it)" if ok else
              f"the saddle does not connect to {named}: its sides relax to minima {sides} Å from it "
              f"(more than {tolerance_A} Å; a saddle of another reaction)")
    return Check(f"connects_to_{target}", bool(ok), distances, tolerance_A, detail)


def verify_saddle(surface, start, x, mode, energy: float, gradient: Optional[np.ndarray], settings) -> Verification:
    """Check the end point ``x`` (free coordinates, Å) with unit ``mode``; true calls go through ``surface``."""
    calls_before = surface.calls
    out = Verification()

    def true_gradient(y):
        return surface(y, kind="verify")[1]

    if gradient is None:
        energy, gradient = surface(x, kind="verify")
    free = start.free
    end_atoms = start.atoms.copy()
    end_atoms.positions = surface.positions(x)
    rotations = rigid_motions(start.atoms, free)
    rigid = rigid_rows(start.atoms, free, end_atoms.positions)
    try:
        curvatures = lowest_curvatures(true_gradient, np.asarray(x, dtype=float), np.asarray(gradient, dtype=float),
                                       np.asarray(mode, dtype=float), rigid=rigid,
                                       max_calls=settings.verify_max_calls, step_A=settings.verify_step_A,
                                       seed=settings.seed, failures=(EvaluationFailed,))
    except (EvaluationFailed, TooManyFailures) as exc:
        out.checks.append(Check("hessian_index", False, None, -settings.curvature_tolerance,
                                f"Hessian index unknown: the potential failed next to the end point ({exc})"))
    else:
        out.checks.append(index_check(curvatures, settings.curvature_tolerance))
        out.extra["curvature_residuals"] = curvatures.residuals
        out.extra["true_mode_overlap"] = abs(float(curvatures.vector @ mode) / np.linalg.norm(mode))
    out.checks.extend(graph_checks(start.atoms, end_atoms, settings))
    out.checks.append(energy_check(surface, start.x0, energy, settings))

    out.checks.append(displacement_check(end_atoms, start.atoms, free, rotations, settings))
    if settings.mode_is_given:
        overlap = abs(float(np.asarray(mode) @ start.mode)) / np.linalg.norm(mode)
        ok = overlap >= settings.min_mode_overlap
        # A warning only: a guessed mode (a product-minus-reactant chord, say) can overlap the true saddle's
        # curved-path tangent weakly; the intended HCN -> HNC saddle gave |cos| 0.13-0.27 (scripts/evaluate_saddle.py).
        out.checks.append(Check("mode_overlap", bool(ok), overlap, settings.min_mode_overlap,
                                f"final mode overlaps the requested one by |cos| {overlap:.2f}"
                                + ("" if ok else " (perhaps another saddle, or the requested mode was a rough "
                                   "guess)"), fatal=False))
    out.calls = surface.calls - calls_before
    return out


def _aligned(moving, reference, rotations: Optional[bool]) -> np.ndarray:
    """Positions of ``moving`` after removing its rigid motion relative to ``reference`` (when one is a symmetry)."""
    if rotations is None:
        return moving.positions
    shifted = moving.positions - moving.positions.mean(axis=0) + reference.positions.mean(axis=0)
    if not rotations:
        return shifted
    from ase.build import minimize_rotation_and_translation

    work, target = moving.copy(), reference.copy()
    work.pbc = target.pbc = False
    minimize_rotation_and_translation(target, work)
    return work.positions
