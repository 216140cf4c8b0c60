"""OpenMM Systems and Topologies around an mlmd model.

- :func:`create_system`: a pure-ML ``openmm.System`` from a Topology (one
  particle per atom, masses from the elements, the model as its only force);
- :func:`create_mixed_system`: a classical System turned into a mechanically
  embedded ML/MM one, as OpenMM-ML's ``createMixedSystem`` does (its argument
  order, force group and ``lambda_interpolate`` interpolation included): the
  classical terms inside the ML region are removed (bonded terms by editing
  the System's XML, nonbonded pairs by exclusions, constraints on request)
  and the model acts on the ML atoms; ML–MM interactions stay classical;
- :func:`topology_from_atoms`: a Topology and positions (nm) for ASE Atoms,
  with a periodic cell in OpenMM's reduced box form.
"""

import re
import sys
import xml.etree.ElementTree as ElementTree
import copy
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch  # noqa: F401  (before openmm: openmm-torch's plugins link torch's libraries)
import openmm
from openmm import app, unit

from ..constants import ANGSTROM_NM
from ..errors import MLMDError, StructureError
from .force import DEFAULT_BACKEND, create_force

# Forces whose terms couple a fixed list of particles, stored in the XML as
# <Bonds>/<Angles>/<Torsions> children with particle attributes p1.., a1.., b1...
_BONDED_FORCES = frozenset({
    "HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "RBTorsionForce",
    "CustomBondForce", "CustomAngleForce", "CustomTorsionForce", "CustomCompoundBondForce",
    "CMAPTorsionForce",
})
_TERM_LISTS = ("Bonds", "Angles", "Torsions")
_PARTICLE_ATTRIBUTE = re.compile(r"^[pab][0-9]+$")
# Many-body classical forces whose interactions among ML atoms cannot be switched off
# pair by pair here: a mixed system with one of them would count the ML region twice.
_UNSUPPORTED_IN_MIXED = frozenset({
    "GBSAOBCForce", "CustomGBForce", "CustomHbondForce", "CustomManyParticleForce",
    "CustomCentroidBondForce", "AmoebaMultipoleForce", "AmoebaVdwForce", "AmoebaGeneralizedKirkwoodForce",
    "AmoebaWcaDispersionForce", "HippoNonbondedForce", "AmoebaTorsionTorsionForce", "DrudeForce",
})
# Forces without a potential energy (motion removers, barostats, thermostats): never interpolated.
_WITHOUT_ENERGY = frozenset({
    "CMMotionRemover", "MonteCarloBarostat", "MonteCarloAnisotropicBarostat", "MonteCarloMembraneBarostat",
    "MonteCarloFlexibleBarostat", "AndersenThermostat",
})
#: OpenMM-ML's spelling of the options -> mlmd's.
OPENMMML_OPTION_NAMES = {"removeConstraints": "remove_constraints", "forceGroup": "force_group",
                         "removeCMMotion": "remove_cm_motion"}
#: The global parameter of an interpolating mixed system (OpenMM-ML's name): 0 classical, 1 ML/MM.
LAMBDA_PARAMETER = "lambda_interpolate"


def create_system(topology: app.Topology, model, backend: str = DEFAULT_BACKEND, periodic: Optional[bool] = None,
                  device: Optional[str] = None, force_group: int = 0, remove_cm_motion: bool = False,
                  **openmmml_options: Any) -> openmm.System:
    """A System with one particle per topology atom (masses from the elements) and the model as its
    only force (in ``force_group``); periodic with the topology's box when it has one (or as
    ``periodic`` says); with ``remove_cm_motion`` (OpenMM-ML: ``removeCMMotion``) a CMMotionRemover too."""
    options = _options(dict(force_group=force_group, remove_cm_motion=remove_cm_motion), openmmml_options,
                       "create_system")
    numbers = topology_numbers(topology)
    box = topology.getPeriodicBoxVectors()
    if periodic is None:
        periodic = box is not None
    if periodic and box is None:
        raise StructureError("create_system: periodic=True but the topology has no periodic box; "
                             "set one with topology.setPeriodicBoxVectors")
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*box)
    force = create_force(model, atomic_numbers=numbers, periodic=periodic, backend=backend, device=device)
    force.setForceGroup(options["force_group"])
    system.addForce(force)
    if options["remove_cm_motion"]:
        system.addForce(openmm.CMMotionRemover())
    return system


def create_mixed_system(system: openmm.System, topology: app.Topology, model, ml_atoms: Iterable[int],
                        backend: str = DEFAULT_BACKEND, remove_constraints: bool = True,
                        device: Optional[str] = None, force_group: int = 0, interpolate: bool = False,
                        remove_cm_motion: Optional[bool] = None, **openmmml_options: Any) -> openmm.System:
    """A copy of the classical ``system`` in which the model describes the atoms ``ml_atoms``
    (mechanical embedding, as OpenMM-ML's ``createMixedSystem``).

    Bonded terms (bonds, angles, torsions, CMAP, custom bonded forces) whose
    particles all lie in the ML region are removed, nonbonded interactions
    between two ML atoms are excluded (``NonbondedForce`` exceptions with zero
    charge product and epsilon, ``CustomNonbondedForce`` exclusions), and, with
    ``remove_constraints``, so are constraints inside the ML region. ML–MM
    interactions stay classical. The model acts on the ML atoms only, in ``force_group``.

    OpenMM-ML's order ``(topology, system, ...)`` is accepted as well, and so are
    its option names (``removeConstraints``, ``forceGroup``, ``removeCMMotion``).
    With ``interpolate`` the energy is ``E = λ E_mixed + (1 - λ) E_classical``
    with the global parameter ``lambda_interpolate`` (default 1), one
    ``CustomCVForce`` in ``force_group`` holding both. ``remove_cm_motion``:
    None keeps the classical system's CMMotionRemover as it is; True adds one
    where missing, False removes it.
    """
    if isinstance(system, app.Topology) and isinstance(topology, openmm.System):
        system, topology = topology, system  # OpenMM-ML's argument order
    options = _options(dict(remove_constraints=remove_constraints, force_group=force_group,
                            remove_cm_motion=remove_cm_motion), openmmml_options, "create_mixed_system")
    ml = _checked_ml_atoms(system, topology, ml_atoms)
    _refuse_unsupported_forces(system)
    mixed = _without_bonded_terms_within(system, set(ml))
    if options["remove_constraints"]:
        _remove_constraints_within(mixed, set(ml))
    _exclude_pairs_within(mixed, ml)
    all_numbers = np.zeros(system.getNumParticles(), dtype=np.int64)
    all_numbers[ml] = topology_numbers(topology, ml)
    ml_force = create_force(model, atomic_numbers=all_numbers, atom_indices=ml,
                            periodic=mixed.usesPeriodicBoundaryConditions(), backend=backend, device=device)
    ml_force.setForceGroup(options["force_group"])
    if interpolate:
        _interpolate(mixed, system, ml_force, options["force_group"])
    else:
        mixed.addForce(ml_force)
    _set_cm_motion_remover(mixed, options["remove_cm_motion"])
    return mixed


def _options(values: Dict[str, Any], openmmml_options: Dict[str, Any], caller: str) -> Dict[str, Any]:
    """``values`` updated with the OpenMM-ML spellings in ``openmmml_options``; unknown names are an error."""
    for name, value in openmmml_options.items():
        if OPENMMML_OPTION_NAMES.get(name) not in values:
            known = ", ".join(sorted(set(values) | {k for k, v in OPENMMML_OPTION_NAMES.items() if v in values}))
            raise MLMDError(f"{caller}: unknown option {name!r}; known options: {known}")
        values[OPENMMML_OPTION_NAMES[name]] = value
    return values


def _interpolate(mixed: openmm.System, classical: openmm.System, ml_force: openmm.Force, force_group: int) -> None:
    """Replace the energy terms of ``mixed`` by one CustomCVForce,
    ``λ (ml + mixed terms) + (1 - λ) (classical terms)``, with λ the global parameter ``lambda_interpolate``."""
    def energy_forces(system: openmm.System) -> List[int]:
        return [i for i, force in enumerate(system.getForces()) if type(force).__name__ not in _WITHOUT_ENERGY]

    interpolated = openmm.CustomCVForce("")
    mixed_terms, classical_terms = ["ml"], []
    interpolated.addCollectiveVariable("ml", ml_force)
    for index in energy_forces(mixed):
        mixed_terms.append(f"mixed{index}")
        interpolated.addCollectiveVariable(mixed_terms[-1], copy.deepcopy(mixed.getForce(index)))
    for index in energy_forces(classical):
        classical_terms.append(f"classical{index}")
        interpolated.addCollectiveVariable(classical_terms[-1], copy.deepcopy(classical.getForce(index)))
    interpolated.setEnergyFunction(f"{LAMBDA_PARAMETER}*({'+'.join(mixed_terms)})"
                                   f"+(1-{LAMBDA_PARAMETER})*({'+'.join(classical_terms) or '0'})")
    interpolated.addGlobalParameter(LAMBDA_PARAMETER, 1.0)
    interpolated.setForceGroup(force_group)
    for index in reversed(energy_forces(mixed)):
        mixed.removeForce(index)
    mixed.addForce(interpolated)


def _set_cm_motion_remover(system: openmm.System, wanted: Optional[bool]) -> None:
    if wanted is None:
        return
    removers = [i for i, force in enumerate(system.getForces()) if isinstance(force, openmm.CMMotionRemover)]
    if wanted and not removers:
        system.addForce(openmm.CMMotionRemover())
    if not wanted:
        for index in reversed(removers):
            system.removeForce(index)


def _checked_ml_atoms(system: openmm.System, topology: app.Topology, ml_atoms: Iterable[int]) -> List[int]:
    """The sorted distinct ML particle indices, after checking them against the system and topology."""
    ml = sorted({int(i) for i in ml_atoms})
    n_particles = system.getNumParticles()
    if not ml:
        raise MLMDError("create_mixed_system: ml_atoms is empty; list the particles the model describes")
    if ml[0] < 0 or ml[-1] >= n_particles:
        raise MLMDError(f"create_mixed_system: ml_atoms must be particle indices in [0, {n_particles})")
    if topology.getNumAtoms() != n_particles:
        raise MLMDError(f"create_mixed_system: the topology has {topology.getNumAtoms()} atoms but the system "
                        f"has {n_particles} particles; pass the topology the system was built from")
    return ml


def _refuse_unsupported_forces(system: openmm.System) -> None:
    """An error for forces whose ML-ML interactions cannot be removed, and for an existing TorchForce."""
    openmmtorch = sys.modules.get("openmmtorch")
    for force in system.getForces():
        if openmmtorch is not None and openmmtorch.TorchForce.isinstance(force):
            # The mixed system is copied through XmlSerializer, and deserializing a TorchForce
            # crashes the process with the openmm-torch 1.5 wheel on OpenMM 8.6.
            raise MLMDError("create_mixed_system: the classical system already contains a TorchForce; "
                            "build the mixed system from the classical force field alone")
        name = type(force).__name__
        if name in _UNSUPPORTED_IN_MIXED:
            raise MLMDError(
                f"create_mixed_system: the system contains a {name}, whose interactions among the ML atoms "
                "cannot be removed; build the classical system without it (for example in vacuum or with "
                "explicit solvent)"
            )


def _without_bonded_terms_within(system: openmm.System, ml: Set[int]) -> openmm.System:
    """A copy of ``system`` (through its XML) without the bonded terms whose particles are all in ``ml``."""
    document = ElementTree.fromstring(openmm.XmlSerializer.serialize(system))
    forces = document.find("Forces")
    for element in forces if forces is not None else []:
        if element.get("type") not in _BONDED_FORCES:
            continue
        for terms in element:
            if terms.tag not in _TERM_LISTS:
                continue
            for term in list(terms):
                particles = [int(v) for k, v in term.attrib.items() if _PARTICLE_ATTRIBUTE.match(k)]
                if particles and ml.issuperset(particles):
                    terms.remove(term)
    return openmm.XmlSerializer.deserialize(ElementTree.tostring(document, encoding="unicode"))


def _remove_constraints_within(system: openmm.System, ml: Set[int]) -> None:
    for index in reversed(range(system.getNumConstraints())):
        i, j, _ = system.getConstraintParameters(index)
        if i in ml and j in ml:
            system.removeConstraint(index)


def _exclude_pairs_within(system: openmm.System, ml: Sequence[int]) -> None:
    """Switch off the nonbonded interaction of every pair of ML atoms."""
    pairs = [(i, j) for a, i in enumerate(ml) for j in ml[a + 1:]]
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            for i, j in pairs:
                force.addException(i, j, 0.0, 1.0, 0.0, True)
        elif isinstance(force, openmm.CustomNonbondedForce):
            existing = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
            for pair in pairs:
                if pair not in existing:
                    force.addExclusion(*pair)


def topology_numbers(topology: app.Topology, indices: Optional[List[int]] = None) -> np.ndarray:
    """The atomic numbers of the topology's atoms (or of those at ``indices``); an error for atoms
    without an element."""
    atoms = list(topology.atoms())
    chosen = atoms if indices is None else [atoms[i] for i in indices]
    missing = [a for a in chosen if a.element is None]
    if missing:
        raise StructureError(
            f"topology atom(s) {', '.join(f'{a.index} ({a.name})' for a in missing[:5])} have no element "
            "(virtual sites or unknown atom types); the model needs every atom's element"
        )
    return np.array([a.element.atomic_number for a in chosen], dtype=np.int64)


def topology_from_atoms(atoms) -> Tuple[app.Topology, unit.Quantity]:
    """An OpenMM Topology (one chain, one residue, no bonds) and positions (nm) for ASE Atoms.

    A periodic cell becomes the topology's box in OpenMM's reduced form
    (lower triangular, ``a_x >= 2|b_x|, 2|c_x|``, ``b_y >= 2|c_y|``). A
    triclinic cell that is not lower triangular is rotated into that form, and
    the returned positions are rotated with it (energies are unchanged, force
    vectors are in the rotated frame).
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise StructureError(
            f"topology_from_atoms: OpenMM boxes are periodic in all three directions or none, got "
            f"pbc={pbc.tolist()}; add vacuum along the non-periodic axes and set pbc=True"
        )
    positions = np.asarray(atoms.get_positions(), dtype=float)
    if not np.isfinite(positions).all():
        raise StructureError("topology_from_atoms: positions contain NaN or infinity; fix the coordinates")
    topology = app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue("MOL", chain)
    for index, z in enumerate(atoms.numbers):
        try:
            element = app.Element.getByAtomicNumber(int(z))
        except KeyError:
            raise StructureError(f"topology_from_atoms: atom {index} has atomic number {z}, "
                                 "which is not a chemical element") from None
        topology.addAtom(f"{element.symbol}{index + 1}", element, residue)
    if pbc.all():
        box, rotation = _reduced_box(atoms.cell)
        positions = positions @ rotation.T
        topology.setPeriodicBoxVectors([openmm.Vec3(*(v * ANGSTROM_NM)) for v in box] * unit.nanometer)
    return topology, unit.Quantity(positions * ANGSTROM_NM, unit.nanometer)


def _reduced_box(cell) -> Tuple[np.ndarray, np.ndarray]:
    """OpenMM's reduced box vectors (Å, rows) for an ASE cell, and the rotation that took the cell there."""
    standard, rotation = cell.standard_form()
    standard = np.array(standard)
    if np.linalg.det(standard) <= 0 or (np.diag(standard) <= 0).any():
        raise StructureError("topology_from_atoms: the cell is singular or left-handed; OpenMM needs "
                             "right-handed lattice vectors spanning a volume")
    a, b, c = standard
    c = c - b * round(c[1] / b[1])
    c = c - a * round(c[0] / a[0])
    b = b - a * round(b[0] / a[0])
    return np.array([a, b, c]), rotation


__all__ = ["LAMBDA_PARAMETER", "OPENMMML_OPTION_NAMES", "create_mixed_system", "create_system", "topology_from_atoms", "topology_numbers"]
