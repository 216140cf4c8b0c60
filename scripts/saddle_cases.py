"""Reactions for the saddle-search evaluation (``scripts/evaluate_saddle.py``): builders, CI-NEB references, judge.

A :class:`Case` holds a relaxed reactant and product (same atom order, product
aligned onto the reactant for molecules), a calculator factory, the moving
atoms and a guessed mode (unit product - reactant on the moving atoms). Cases
are registered by name in :data:`CASES` with :func:`register_case`:

=================  =========  ====================================================================
name               potential  reaction
=================  =========  ====================================================================
``mb``             analytic   Müller-Brown (x 0.01 eV), minimum A -> C; saddle (-0.822, 0.624)
``hcn``            GFN2-xTB   HCN -> HNC, 1,2-H shift
``ethanol-torsion``GFN2-xTB   ethanol methyl rotation by 120° (eclipsed saddle)
``ethanol-torsion-tangent``  the same with the rotation's tangent as the mode
``malonaldehyde``  GFN2-xTB   intramolecular O-H...O proton transfer
``vinyl-alcohol``  GFN2-xTB   syn vinyl alcohol -> acetaldehyde, 1,3-H shift
``cyclobutene``    GFN2-xTB   cyclobutene -> s-cis/gauche butadiene, conrotatory ring opening
``pt111-hop``      EMT        Pt adatom fcc -> hcp hollow on Pt(111) 4x4x4
``cu100-exchange`` EMT        Cu adatom on Cu(100) 4x4x4 replaces a surface atom, which pops out
``cu100-vacancy``  EMT        a top-layer Cu atom hops into a neighbouring surface vacancy, 4x4x4
=================  =========  ====================================================================

Slabs: 4x4x4, two bottom layers fixed, 8 Å vacuum. The reference saddle of
a case comes from a climbing-image NEB (:func:`neb_reference`), except for
the analytic cases. :func:`judge` decides whether an end point is the
intended saddle.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, fcc100, fcc111, molecule
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.optimize import BFGS, FIRE

from mlmd.io import atomic_write
from mlmd.training.registry import register_in
from mlmd.saddle.curvature import rigid_basis
from mlmd.saddle.start import free_atoms
from mlmd.saddle.surfaces import MB_MINIMA, MB_SADDLES, MullerBrown, muller_brown_atoms

#: judge tolerances: energy (eV) and RMSD (Å) from the reference saddle; a Hessian eigenvalue below
#: -NEGATIVE_TOLERANCE (eV/Å²) counts as negative
ENERGY_TOLERANCE_EV = 0.05
RMSD_TOLERANCE_A = 0.15
NEGATIVE_TOLERANCE = 0.01
#: relaxation threshold of the end states (eV/Å)
RELAX_FMAX = 0.005


#: radius (Å) around the moving atoms of a slab case inside which a start is displaced: their first neighbours
#: (Cu 2.55, Pt 2.77 Å), not the second (3.6, 3.9 Å)
DISPLACE_RADIUS_A = 3.3


@dataclass
class Case:
    """A reaction: relaxed ``reactant`` and ``product``, calculator ``factory``, ``kind`` molecule|slab|analytic.

    ``mode``: unit [n_atoms, 3] guess (default product - reactant on ``moving``, the atoms that move at
    least 0.3 x the most);
    ``path``: optional ``path(n) -> list of Atoms`` initial NEB path (else IDPP);
    ``reference``: the analytic reference saddle when known (Atoms), else None;
    ``hessian_step_A``: finite-difference step of the judge's Hessian.
    """

    name: str
    kind: str
    reactant: Atoms
    product: Atoms
    factory: Callable
    summary: str
    moving: np.ndarray = None
    mode: np.ndarray = None
    path: Optional[Callable] = None
    reference: Optional[Atoms] = None
    hessian_step_A: float = 0.005
    extra: Dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind == "molecule":
            self.product.positions = kabsch_aligned(self.product.positions, self.reactant.positions)
        delta = self.product.positions - self.reactant.positions
        norms = np.linalg.norm(delta, axis=1)
        if self.moving is None:
            self.moving = np.flatnonzero(norms >= 0.3 * norms.max())
        if self.mode is None:
            self.mode = np.zeros_like(delta)
            self.mode[self.moving] = delta[self.moving]
        self.mode = np.asarray(self.mode, dtype=float) / np.linalg.norm(self.mode)

    @property
    def free(self) -> np.ndarray:
        return free_atoms(self.reactant)

    @property
    def displaced(self) -> np.ndarray:
        """The free atoms a search's start displaces: all of a molecule's; on a slab, those within
        ``DISPLACE_RADIUS_A`` of a moving atom (minimum image). Displacing every free atom of a slab by 0.05 Å
        put the Pt(111) start 0.91 eV above its minimum, 6x the 0.16 eV barrier it was meant to find."""
        if self.kind != "slab":
            return self.free
        distances = self.reactant.get_all_distances(mic=True)[self.moving]
        near = np.flatnonzero((distances <= DISPLACE_RADIUS_A).any(axis=0))
        return np.intersect1d(near, self.free)


#: case builders by name
CASES: Dict[str, Callable[[], Case]] = {}


def register_case(name: str):
    """Decorator: ``CASES[name] = builder``."""
    return register_in(CASES, name)


def relaxed(atoms: Atoms, factory, fmax: float = RELAX_FMAX, steps: int = 2000) -> Atoms:
    """A relaxed copy of ``atoms`` (BFGS to ``fmax`` eV/Å) without a calculator attached."""
    work = atoms.copy()
    work.calc = factory()
    BFGS(work, logfile=None).run(fmax=fmax, steps=steps)
    out = work.copy()
    out.calc = None
    return out


def kabsch_aligned(moving: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``moving`` [n, 3] rotated and translated onto ``reference`` (least squares, proper rotation)."""
    a = moving - moving.mean(axis=0)
    b = reference - reference.mean(axis=0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return a @ rotation + reference.mean(axis=0)


def rotated(points: np.ndarray, origin: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """``points`` rotated by ``angle`` (rad) about ``axis`` through ``origin`` (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    p = points - origin
    c, s = np.cos(angle), np.sin(angle)
    return origin + p * c + np.cross(k, p) * s + np.outer(p @ k, k) * (1 - c)


def xtb():
    from mlmd.calculators import get_calculator

    return get_calculator("gfn2")


# --- analytic -------------------------------------------------------------------------------------------------

@register_case("mb")
def mb_case() -> Case:
    reactant, product = (relaxed(muller_brown_atoms(*p), MullerBrown, fmax=1e-4) for p in MB_MINIMA[::2])
    saddle = muller_brown_atoms(*MB_SADDLES[0])
    saddle.calc = None
    return Case("mb", "analytic", reactant, product, MullerBrown, "Müller-Brown A -> C", reference=saddle,
                hessian_step_A=1e-4)


# --- molecules with GFN2-xTB ----------------------------------------------------------------------------------

@register_case("hcn")
def hcn_case() -> Case:
    reactant = relaxed(molecule("HCN"), xtb)  # C, N, H on z
    c, n, h = reactant.positions
    product = reactant.copy()
    product.positions[2] = n + (n - c) / np.linalg.norm(n - c) * 1.0
    product = relaxed(product, xtb)
    middle = 0.5 * (c + n)
    radius_r, radius_p = np.linalg.norm(h - middle), np.linalg.norm(product.positions[2] - middle)

    def path(n_images):  # H swings round the C-N centre in the xz plane (a straight line would cross C and N)
        images = []
        for t in np.linspace(0, 1, n_images + 2):
            image = reactant.copy()
            image.positions = (1 - t) * reactant.positions + t * product.positions
            angle = np.pi * t
            direction = np.array([np.sin(angle), 0.0, -np.cos(angle)])
            image.positions[2] = 0.5 * (image.positions[0] + image.positions[1]) + direction * (
                (1 - t) * radius_r + t * radius_p)
            images.append(image)
        return images

    mode = np.zeros((3, 3))
    mode[2] = [1.0, 0.0, 0.0]  # H sideways, perpendicular to the molecular axis
    return Case("hcn", "molecule", reactant, product, xtb, "HCN -> HNC (1,2-H shift)", moving=np.array([2]),
                mode=mode, path=path)


def _torsion_path(reactant, group, origin_atom, axis_atom, angle):
    """path(n): atoms ``group`` rotated about the axis_atom-origin_atom bond by t x ``angle``."""

    def path(n_images):
        images = []
        for t in np.linspace(0, 1, n_images + 2):
            image = reactant.copy()
            p = image.positions
            p[group] = rotated(p[group], p[origin_atom], p[axis_atom] - p[origin_atom], t * angle)
            images.append(image)
        return images

    return path


@register_case("ethanol-torsion")
def ethanol_case() -> Case:
    reactant = relaxed(molecule("CH3CH2OH"), xtb)  # C(methyl) 0, C 1, O 2, H 3 (O), H 4-5, methyl H 6-8
    methyl = [6, 7, 8]
    product = reactant.copy()
    p = product.positions
    p[methyl] = rotated(p[methyl], p[0], p[1] - p[0], 2 * np.pi / 3)
    product = relaxed(product, xtb)
    path = _torsion_path(reactant, methyl, 0, 1, 2 * np.pi / 3)
    return Case("ethanol-torsion", "molecule", reactant, product, xtb, "ethanol methyl torsion (120°)",
                moving=np.array(methyl), path=path)


@register_case("ethanol-torsion-tangent")
def ethanol_tangent_case() -> Case:
    """The ethanol torsion with the chemically guessed mode: the rotation's tangent k x (r - r_C) on the methyl
    hydrogens, instead of the chord product - reactant (which is 60° off it and compresses the C-H bonds)."""
    case = ethanol_case()
    p = case.reactant.positions
    axis = (p[1] - p[0]) / np.linalg.norm(p[1] - p[0])
    mode = np.zeros_like(p)
    mode[case.moving] = np.cross(axis, p[case.moving] - p[0])
    case.name, case.summary, case.mode = "ethanol-torsion-tangent", "ethanol methyl torsion, tangent mode", mode
    case.__post_init__()
    return case


@register_case("malonaldehyde")
def malonaldehyde_case() -> Case:
    # planar enol, O1-H...O2: C1(-1.25,0.6) C2(0,0) C3(1.25,0.6) O1 O2, H on O1, CH hydrogens
    symbols = "CCCOOHHHH"
    positions = [[-1.22, 0.62, 0], [0.0, -0.05, 0], [1.24, 0.66, 0], [-1.25, 1.96, 0], [1.28, 1.90, 0],
                 [-0.38, 2.33, 0], [0.0, -1.13, 0], [-2.17, 0.10, 0], [2.18, 0.10, 0]]
    start = Atoms(symbols, positions=positions)
    start.positions[:, 2] += np.random.default_rng(0).normal(scale=0.02, size=len(start))
    reactant = relaxed(start, xtb)
    # the product is the mirror image through the plane bisecting O...O, with mirror partners swapped
    partner = [2, 1, 0, 4, 3, 5, 6, 8, 7]
    p = reactant.positions
    centre = 0.5 * (p[3] + p[4])
    normal = (p[4] - p[3]) / np.linalg.norm(p[4] - p[3])
    mirrored = p - 2 * np.outer((p - centre) @ normal, normal)
    product = reactant.copy()
    product.positions = mirrored[partner]
    product = relaxed(product, xtb)
    return Case("malonaldehyde", "molecule", reactant, product, xtb, "malonaldehyde proton transfer")


@register_case("vinyl-alcohol")
def vinyl_alcohol_case() -> Case:
    start = molecule("H2CCHF")  # C 0 (CHF), C 1 (CH2), F 2 -> O, H 3 on C0, H 4-5 on C1
    start.symbols[2] = "O"
    p = start.positions
    u = (p[2] - p[0]) / np.linalg.norm(p[2] - p[0])
    w = (p[1] - p[0]) - ((p[1] - p[0]) @ u) * u
    w /= np.linalg.norm(w)
    hydroxyl = p[2] + 0.97 * (np.cos(np.radians(71)) * u + np.sin(np.radians(71)) * w)  # syn to C=C
    reactant = relaxed(start + Atoms("H", positions=[hydroxyl]), xtb)
    product = reactant.copy()
    q = product.positions
    normal = np.cross(q[1] - q[0], q[2] - q[0])
    along = (q[1] - q[0]) / np.linalg.norm(q[1] - q[0])
    towards = 0.94 * normal / np.linalg.norm(normal) + 0.34 * along
    q[6] = q[1] + 1.09 * towards / np.linalg.norm(towards)  # the hydroxyl H onto the CH2 carbon, out of plane
    product = relaxed(product, xtb)
    return Case("vinyl-alcohol", "molecule", reactant, product, xtb,
                "syn vinyl alcohol -> acetaldehyde (1,3-H shift)")


def _opened(reactant, t, sign):
    """Cyclobutene with C2-C3 stretched by t x 1 Å and the CH2 groups turned by t x 90° (sign: con/dis)."""
    image = reactant.copy()
    p = image.positions
    for carbon, neighbour, hydrogens, turn in ((2, 0, [6, 7], 1.0), (3, 1, [8, 9], sign)):
        p[hydrogens] = rotated(p[hydrogens], p[carbon], p[carbon] - p[neighbour], turn * t * np.pi / 2)
    stretch = (p[3] - p[2]) / np.linalg.norm(p[3] - p[2])
    p[[2, 6, 7]] -= 0.5 * t * stretch
    p[[3, 8, 9]] += 0.5 * t * stretch
    return image


@register_case("cyclobutene")
def cyclobutene_case(sign: float = 1.0) -> Case:
    reactant = relaxed(molecule("cyclobutene"), xtb)  # C=C 0-1, CH2 carbons 2 (H 6,7), 3 (H 8,9)
    start = _opened(reactant, 1.0, sign)
    start.positions += np.random.default_rng(0).normal(scale=0.05, size=start.positions.shape)  # off s-cis planar
    product = relaxed(start, xtb)
    product.positions = kabsch_aligned(product.positions, reactant.positions)
    end = _opened(reactant, 1.0, sign).positions

    def path(n_images):  # the opening motion, bent onto the relaxed product
        images = []
        for t in np.linspace(0, 1, n_images + 2):
            image = _opened(reactant, t, sign)
            image.positions += t * (product.positions - end)
            images.append(image)
        return images

    return Case("cyclobutene", "molecule", reactant, product, xtb, "cyclobutene ring opening (conrotatory)",
                path=path)


# --- slabs with EMT -------------------------------------------------------------------------------------------

def _slab(builder, metal, fixed_layers=2, size=(4, 4, 4)):
    slab = builder(metal, size=size, vacuum=8.0)
    slab.set_constraint(FixAtoms(mask=slab.get_tags() > size[2] - fixed_layers))
    return slab


def _with_constraint(atoms: Atoms, template: Atoms) -> Atoms:
    atoms.set_constraint([c.copy() for c in template.constraints])
    return atoms


def _relaxed_slab(atoms: Atoms, slab: Atoms) -> Atoms:
    """``atoms`` relaxed with EMT, carrying ``slab``'s constraints."""
    return _with_constraint(relaxed(atoms, EMT), slab)


def _with_adatom(slab: Atoms, metal: str, height: float, site: str) -> Atoms:
    """``slab`` plus one ``metal`` adatom at ``site`` (offset (1, 1)), relaxed."""
    atoms = slab.copy()
    add_adsorbate(atoms, metal, height, site, offset=(1, 1))
    return _relaxed_slab(atoms, slab)


@register_case("pt111-hop")
def pt_hop_case() -> Case:
    slab = _slab(fcc111, "Pt")
    reactant = _with_adatom(slab, "Pt", 2.0, "fcc")
    product = _with_adatom(slab, "Pt", 2.0, "hcp")
    return Case("pt111-hop", "slab", reactant, product, EMT, "Pt adatom fcc -> hcp on Pt(111)",
                moving=np.array([len(reactant) - 1]), hessian_step_A=0.002)


@register_case("cu100-exchange")
def cu_exchange_case() -> Case:
    slab = _slab(fcc100, "Cu")
    reactant = _with_adatom(slab, "Cu", 1.7, "hollow")
    adatom = len(reactant) - 1
    top = np.flatnonzero(reactant.get_tags() == 1)
    xy = reactant.positions[:, :2]
    # the top-layer atom nearest the adatom (in-plane), and the hollow beyond it
    surface = top[np.argmin(np.linalg.norm(xy[top] - xy[adatom], axis=1))]
    product = reactant.copy()
    p = product.positions
    p[adatom], p[surface] = p[surface].copy(), p[adatom] + np.r_[2 * (xy[surface] - xy[adatom]), 0.0]
    product = _relaxed_slab(product, slab)
    return Case("cu100-exchange", "slab", reactant, product, EMT, "Cu adatom exchange on Cu(100)",
                moving=np.array([surface, adatom]), hessian_step_A=0.002)


@register_case("cu100-vacancy")
def cu_vacancy_case() -> Case:
    slab = _slab(fcc100, "Cu")
    top = np.flatnonzero(slab.get_tags() == 1)
    centre = slab.positions[top, :2].mean(axis=0)
    vacancy = top[np.argmin(np.linalg.norm(slab.positions[top, :2] - centre, axis=1))]
    neighbours = [i for i in top if i != vacancy]
    hopper = neighbours[int(np.argmin(np.linalg.norm(slab.positions[neighbours] - slab.positions[vacancy], axis=1)))]
    site = slab.positions[vacancy].copy()
    del slab[vacancy]
    hopper -= hopper > vacancy
    slab.set_constraint(FixAtoms(mask=slab.get_tags() > 2))
    reactant = _relaxed_slab(slab, slab)
    product = slab.copy()
    product.positions[hopper] = site
    product = _relaxed_slab(product, slab)
    return Case("cu100-vacancy", "slab", reactant, product, EMT, "Cu(100) surface vacancy hop",
                moving=np.array([hopper]), hessian_step_A=0.002)


def build_case(name: str) -> Case:
    if name not in CASES:
        raise SystemExit(f"unknown case {name!r}: use one of {', '.join(CASES)}")
    return CASES[name]()


# --- reference saddles ----------------------------------------------------------------------------------------

def neb_reference(case: Case, n_images: int = 7, fmax: float = 0.03, steps: int = 3000) -> Dict:
    """Climbing-image NEB between the case's end states: IDPP path (or the case's own), FIRE without, then with
    the climbing image, to ``fmax`` eV/Å. Returns the highest image and the path energies."""
    from ase.mep import NEB

    if case.path is not None:
        images = case.path(n_images)
    else:
        images = [case.reactant.copy() for _ in range(n_images + 1)] + [case.product.copy()]
    for image in images:
        _with_constraint(image, case.reactant)
        image.calc = case.factory()
    molecule_like = case.kind == "molecule"
    neb = NEB(images, climb=False, remove_rotation_and_translation=molecule_like, method="improvedtangent")
    if case.path is None:
        neb.interpolate(method="idpp")
    FIRE(neb, logfile=None).run(fmax=0.3, steps=steps)
    neb.climb = True
    optimizer = FIRE(neb, logfile=None)
    converged = bool(optimizer.run(fmax=fmax, steps=steps))
    energies = [float(image.get_potential_energy()) for image in images]
    top = int(np.argmax(energies[1:-1])) + 1
    return {"positions": images[top].positions.tolist(), "energy": energies[top], "energies": energies,
            "neb_converged": converged, "neb_steps": int(optimizer.nsteps), "climbing_image": top,
            "n_images": n_images, "fmax": fmax}


def reference_saddle(case: Case, folder: Path) -> Dict:
    """The case's reference saddle: analytic, or a CI-NEB cached as ``folder/<case>.json`` (+ ``.xyz``)."""
    from ase.io import write

    path = folder / f"{case.name}.json"
    if path.exists():
        data = json.loads(path.read_text())
        if np.allclose(data["reactant"], case.reactant.positions, atol=1e-3):
            return data
    if case.reference is not None:
        saddle = case.reference.copy()
        saddle.calc = case.factory()
        data = {"positions": saddle.positions.tolist(), "energy": float(saddle.get_potential_energy()),
                "source": "analytic"}
    else:
        data = neb_reference(case)
        data["source"] = "ci-neb"
        data.update(newton_refined(case, np.array(data["positions"])))
    saddle = case.reactant.copy()
    saddle.positions = np.array(data["positions"])
    index, lowest = hessian_index(saddle, case)
    reactant = case.reactant.copy()
    reactant.calc = case.factory()
    data.update(hessian_index=index, lowest_eigenvalue=lowest, reactant=case.reactant.positions.tolist(),
                reactant_energy=float(reactant.get_potential_energy()))
    data["barrier"] = data["energy"] - data["reactant_energy"]
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as stream:
        json.dump(data, stream, indent=1)
    with atomic_write(folder / f"{case.name}.xyz") as stream:
        write(stream, [case.reactant, saddle, case.product], format="extxyz")
    return data


def newton_refined(case: Case, positions: np.ndarray, steps: int = 8, fmax: float = 0.002,
                   max_step_A: float = 0.1) -> Dict:
    """Newton steps ``-H⁺ g`` with the central-difference Hessian of the free coordinates (rigid motions
    projected out for molecules; steps capped at ``max_step_A`` per atom) from the climbing image until the
    largest force is below ``fmax`` eV/Å. Independent of every compared method; kept only when it ends at
    index 1 with a smaller force than the climbing image."""
    from mlmd.saddle.surfaces import numerical_hessian

    free = case.free
    atoms = case.reactant.copy()
    atoms.positions = positions
    atoms.calc = case.factory()

    def force_max():
        return float(np.linalg.norm(atoms.get_forces()[free], axis=1).max())

    first = force_max()
    for _ in range(steps):
        if force_max() < fmax:
            break
        hessian = numerical_hessian(atoms, case.factory(), indices=free, step_A=case.hessian_step_A)
        gradient = -atoms.get_forces(apply_constraint=False)[free].ravel()
        if case.kind == "molecule":
            rigid = rigid_basis(atoms.positions, rotations=True)
            projector = np.eye(len(hessian)) - rigid.T @ rigid
            hessian, gradient = projector @ hessian @ projector, projector @ gradient
        values, vectors = np.linalg.eigh(hessian)
        keep = np.abs(values) > 1e-3
        step = -(vectors[:, keep] / values[keep]) @ (vectors[:, keep].T @ gradient)
        step = step.reshape(-1, 3)
        step *= min(1.0, max_step_A / np.linalg.norm(step, axis=1).max())
        new = atoms.positions.copy()
        new[free] += step
        atoms.positions = new
    last = force_max()
    index, _ = hessian_index(atoms, case)
    if index == 1 and last < first:
        return {"positions": atoms.positions.tolist(), "energy": float(atoms.get_potential_energy()),
                "ci_fmax": first, "refined_fmax": last, "refined": True}
    return {"ci_fmax": first, "refined_fmax": last, "refined": False}


# --- judge ----------------------------------------------------------------------------------------------------

def hessian_index(atoms: Atoms, case: Case):
    """(number of eigenvalues below -NEGATIVE_TOLERANCE, lowest eigenvalue eV/Å²) of the central-difference
    Hessian of the free coordinates; rigid translations and rotations projected out for molecules."""
    from mlmd.saddle.surfaces import numerical_hessian

    free = case.free
    hessian = numerical_hessian(atoms, case.factory(), indices=free, step_A=case.hessian_step_A)
    if case.kind == "molecule":
        rigid = rigid_basis(atoms.positions, rotations=True)
        projector = np.eye(len(hessian)) - rigid.T @ rigid
        hessian = projector @ hessian @ projector
    eigenvalues = np.linalg.eigvalsh(hessian)
    return int(np.sum(eigenvalues < -NEGATIVE_TOLERANCE)), float(eigenvalues[0])


def rmsd(positions: np.ndarray, reference: np.ndarray, case: Case) -> float:
    """RMSD (Å): free atoms as they are for slabs; for molecules after Kabsch alignment, also trying the
    assignment of same-element atoms that fits best (equivalent saddles of a torsion), the smaller kept."""
    if case.kind != "molecule":
        free = case.free
        return float(np.sqrt(np.mean(np.sum((positions[free] - reference[free]) ** 2, axis=1))))
    from scipy.optimize import linear_sum_assignment

    numbers = case.reactant.numbers
    best = np.inf
    order = np.arange(len(positions))
    for _ in range(3):
        aligned = kabsch_aligned(positions[order], reference)
        value = float(np.sqrt(np.mean(np.sum((aligned - reference) ** 2, axis=1))))
        best = min(best, value)
        new = order.copy()
        for z in np.unique(numbers):
            idx = np.flatnonzero(numbers == z)
            cost = np.linalg.norm(aligned[idx][:, None] - reference[idx][None], axis=2) ** 2
            rows, cols = linear_sum_assignment(cost)
            new[idx[cols]] = order[idx[rows]]
        if np.array_equal(new, order):
            break
        order = new
    return best


def judge(atoms: Atoms, converged: bool, case: Case, reference: Dict) -> Dict:
    """Whether ``atoms`` is the intended saddle: converged, Hessian index 1, energy within ENERGY_TOLERANCE_EV
    and RMSD within RMSD_TOLERANCE_A of the reference. ``outcome``: intended | wrong-saddle | not-converged;
    ``same_energy_saddle``: a wrong saddle of index 1 within the energy tolerance (e.g. a symmetry-equivalent
    hop in another direction than the mode's)."""
    from ase.calculators.calculator import CalculationFailed

    work = atoms.copy()
    work.calc = case.factory()
    try:
        energy = float(work.get_potential_energy())
        index, lowest = hessian_index(work, case) if converged else (None, float("nan"))
    except CalculationFailed as exc:  # e.g. an SCF that fails at or near a broken end point: not the intended saddle
        return {"outcome": "wrong-saddle" if converged else "not-converged", "success": False,
                "same_energy_saddle": False, "hessian_index": None, "lowest_eigenvalue": float("nan"),
                "energy": float("nan"), "energy_minus_reference": float("nan"), "rmsd_to_reference": float("nan"),
                "judge_error": str(exc)}
    distance = rmsd(work.positions, np.array(reference["positions"]), case)
    delta = energy - reference["energy"]
    intended = bool(converged and index == 1 and abs(delta) <= ENERGY_TOLERANCE_EV and distance <= RMSD_TOLERANCE_A)
    outcome = "intended" if intended else ("wrong-saddle" if converged else "not-converged")
    # a first-order saddle at the reference energy but elsewhere: symmetry-equivalent or a near-degenerate one
    same = bool(converged and not intended and index == 1 and abs(delta) <= ENERGY_TOLERANCE_EV)
    return {"outcome": outcome, "success": intended, "same_energy_saddle": same, "hessian_index": index, "lowest_eigenvalue": lowest,
            "energy": energy, "energy_minus_reference": delta, "rmsd_to_reference": distance}
