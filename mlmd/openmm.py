"""The OpenMM adapter: any exported mlmd model as an OpenMM force.

Two backends compute the same thing:

- ``backend="torch"`` (default): an ``openmmtorch.TorchForce`` wrapping
  :class:`TorchForceModule`, a TorchScript module that holds the model, the
  atomic numbers, the periodicity and the atom subset. OpenMM calls it with
  positions in nm (and box vectors in nm when periodic); it converts to Å,
  runs the model contract with ``compute_forces=True`` and returns
  ``(energy kJ/mol, forces kJ/mol/nm)`` with ``setOutputsForces(True)``: the
  contract computes its forces by autograd inside the model and, in eval
  mode, returns detached tensors, so TorchForce could not differentiate the
  energy itself (and measured no faster when made to). The force runs on
  whatever device the OpenMM platform uses.
- ``backend="python"``: an ``openmm.PythonForce`` (OpenMM >= 8.5.2) whose
  computation is a picklable :class:`PythonForceComputation`; it needs no
  openmm-torch, works with any torch, and survives ``XmlSerializer`` and
  ``pickle`` (it holds the model file's path, or the model's bytes when the
  model was never written to a file, and loads the model on first use).

:func:`create_system` builds a pure-ML ``openmm.System`` from a Topology;
:func:`create_mixed_system` turns a classical System into a mechanically
embedded ML/MM one; :func:`topology_from_atoms` converts ASE Atoms. Units
are converted here and nowhere else (nm and kJ/mol at the boundary, with the
factors of :mod:`mlmd.constants`).
"""

import contextlib
import io
import json
import logging
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch  # before openmm: openmm-torch's plugins link torch's libraries, which torch loads
import openmm
from openmm import app, unit
from torch import Tensor

from .constants import ANGSTROM_NM, EV_KJ_PER_MOL, EV_PER_A_KJ_PER_MOL_NM, NM_ANGSTROM
from .errors import MLMDError, StructureError
from .model import METADATA_FILE, Model, load_model

BACKENDS = ("torch", "python")

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


class TorchForceModule(torch.nn.Module):
    """TorchScript-able bridge between OpenMM's TorchForce and the model contract.

    ``forward(positions [N,3] nm, box_vectors [3,3] nm or None)`` returns
    ``(energy kJ/mol, forces [N,3] kJ/mol/nm)`` in the dtype of ``positions``.
    With ``atom_indices`` the model sees only those atoms and the forces on the
    other atoms are zero.
    """

    def __init__(self, model: torch.nn.Module, atomic_numbers: Tensor, periodic: bool,
                 atom_indices: Optional[Tensor] = None, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.model = model
        self.periodic = bool(periodic)
        self.subset = atom_indices is not None
        if atom_indices is None:
            atom_indices = torch.zeros(0, dtype=torch.int64)
        self.register_buffer("atom_indices", torch.as_tensor(atom_indices, dtype=torch.int64))
        self.register_buffer("atomic_numbers", torch.as_tensor(atomic_numbers, dtype=torch.int64))
        self.register_buffer("pbc", torch.full((1, 3), self.periodic, dtype=torch.bool))
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=dtype))
        self.length_scale = float(NM_ANGSTROM)
        self.energy_scale = float(EV_KJ_PER_MOL)
        self.force_scale = float(EV_PER_A_KJ_PER_MOL_NM)

    def forward(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        dtype = self.dtype_probe.dtype
        selected = positions.index_select(0, self.atom_indices) if self.subset else positions
        coordinates = selected.to(dtype) * self.length_scale
        cell = torch.zeros((1, 3, 3), dtype=dtype, device=positions.device)
        if self.periodic and box_vectors is not None:
            cell = box_vectors.to(dtype).reshape(1, 3, 3) * self.length_scale
        batch = torch.zeros(coordinates.shape[0], dtype=torch.int64, device=positions.device)
        out = self.model(coordinates, self.atomic_numbers, cell, self.pbc, batch, True, False)
        energy = out["energy"].sum().to(positions.dtype) * self.energy_scale
        forces = out["forces"].to(positions.dtype) * self.force_scale
        if self.subset:
            forces = torch.zeros_like(positions).index_copy(0, self.atom_indices, forces)
        return energy, forces


class PythonForceComputation:
    """The picklable computation of an ``openmm.PythonForce``: state -> (kJ/mol, kJ/mol/nm).

    Holds the model file's absolute path (or the exported model's bytes), the
    atomic numbers of the atoms it acts on, the periodicity and the device;
    the model itself is loaded on the first call and never pickled.
    """

    def __init__(self, model_source: Union[str, bytes], atomic_numbers: Sequence[int], periodic: bool,
                 device: str = "cpu"):
        self.model_source = model_source
        self.atomic_numbers = [int(z) for z in atomic_numbers]
        self.periodic = bool(periodic)
        self.device = str(device)
        self._model: Optional[Model] = None
        self._inputs: Optional[Tuple[Tensor, Tensor, Tensor]] = None

    def __getstate__(self) -> Dict:
        state = self.__dict__.copy()
        state["_model"] = None
        state["_inputs"] = None
        return state

    @property
    def model(self) -> Model:
        if self._model is None:
            if isinstance(self.model_source, bytes):
                extra = {METADATA_FILE: ""}
                module = torch.jit.load(io.BytesIO(self.model_source), map_location=self.device,
                                        _extra_files=extra)
                self.attach(Model(module, json.loads(extra[METADATA_FILE])))
            else:
                self.attach(load_model(self.model_source, device=self.device))
        assert self._model is not None
        return self._model

    def attach(self, model: Model) -> None:
        """Use an already loaded ``model`` (the one ``model_source`` describes) until the next unpickling."""
        device = model.device
        self._model = model
        self._inputs = (
            torch.tensor(self.atomic_numbers, dtype=torch.int64, device=device),
            torch.full((1, 3), self.periodic, dtype=torch.bool, device=device),
            torch.zeros(len(self.atomic_numbers), dtype=torch.int64, device=device),
        )

    def __call__(self, state: openmm.State) -> Tuple[float, np.ndarray]:
        model = self.model
        assert self._inputs is not None
        atomic_numbers, pbc, batch = self._inputs
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * NM_ANGSTROM
        if self.periodic:
            cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) * NM_ANGSTROM
        else:
            cell = np.zeros((3, 3))
        device = model.device
        out = model(
            torch.as_tensor(positions, dtype=model.dtype, device=device),
            atomic_numbers,
            torch.as_tensor(cell, dtype=model.dtype, device=device).unsqueeze(0),
            pbc,
            batch,
            True,
            False,
        )
        energy = float(out["energy"].sum()) * EV_KJ_PER_MOL
        forces = out["forces"].detach().to("cpu", torch.float64).numpy() * EV_PER_A_KJ_PER_MOL_NM
        return energy, forces


def create_force(model, atoms=None, atomic_numbers: Optional[Sequence[int]] = None,
                 periodic: Optional[bool] = None, backend: str = "torch",
                 atom_indices: Optional[Sequence[int]] = None, device: Optional[str] = None) -> openmm.Force:
    """An OpenMM force computing ``model`` (a file, :class:`~mlmd.model.Model` or potential).

    Args:
        atoms: ASE Atoms giving the atomic numbers and, unless ``periodic`` is
            given, the periodicity (``pbc`` all True or all False).
        atomic_numbers: the atomic number of every particle of the System
            (instead of ``atoms``).
        periodic: whether the force uses OpenMM's periodic box (default: from
            ``atoms``, else False).
        backend: ``"torch"`` (openmm-torch ``TorchForce``) or ``"python"``
            (``openmm.PythonForce``).
        atom_indices: apply the model to these particles only (indices into
            the System; ``atoms``/``atomic_numbers`` still describe every particle).
        device: where the ``"python"`` backend runs the model (default cpu). The
            ``"torch"`` backend runs on the OpenMM platform's device (the CUDA
            platform moves it to the GPU) and accepts no other device.
    """
    if backend not in BACKENDS:
        raise MLMDError(f"unknown OpenMM backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    numbers, periodic = _numbers_and_periodicity(atoms, atomic_numbers, periodic)
    indices = None
    if atom_indices is not None:
        indices = np.asarray(list(atom_indices), dtype=np.int64)
        if indices.ndim != 1 or len(indices) == 0:
            raise MLMDError("atom_indices must be a non-empty list of particle indices")
        if indices.min() < 0 or indices.max() >= len(numbers) or len(np.unique(indices)) != len(indices):
            raise MLMDError(f"atom_indices must be distinct particle indices in [0, {len(numbers)}); "
                            f"got {indices.min()}..{indices.max()} with {len(indices)} entries")
        numbers = numbers[indices]

    if backend == "torch":
        if device is not None and torch.device(device).type != "cpu":
            raise MLMDError(
                f"device={device!r} applies to backend='python'; with backend='torch' the OpenMM platform "
                "chooses the device (use the CUDA platform to run on a GPU)"
            )
        loaded = load_model(model, device="cpu")
        _check_species(numbers, loaded, "create_force")
        openmmtorch = _import_openmmtorch()
        module = TorchForceModule(loaded.module, torch.as_tensor(numbers), periodic,
                                  None if indices is None else torch.as_tensor(indices), loaded.dtype)
        force = openmmtorch.TorchForce(torch.jit.script(module))
        force.setOutputsForces(True)
    else:
        loaded = load_model(model, device=device or "cpu")
        _check_species(numbers, loaded, "create_force")
        computation = PythonForceComputation(_model_source(loaded), numbers, periodic, str(loaded.device))
        computation.attach(loaded)  # a pickled copy loads the model again from its source
        force = openmm.PythonForce(computation)
        if indices is not None:
            force.setParticles([int(i) for i in indices])
    force.setUsesPeriodicBoundaryConditions(periodic)
    force.setName(f"mlmd {loaded.family or 'model'}")
    return force


def create_system(topology: app.Topology, model, backend: str = "torch", periodic: Optional[bool] = None,
                  device: Optional[str] = None) -> openmm.System:
    """A System with one particle per topology atom (masses from the elements) and the model as its
    only force; periodic with the topology's box when it has one (or as ``periodic`` says)."""
    numbers = _topology_numbers(topology)
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
    system.addForce(create_force(model, atomic_numbers=numbers, periodic=periodic, backend=backend,
                                 device=device))
    return system


def create_mixed_system(system: openmm.System, topology: app.Topology, model, ml_atoms: Iterable[int],
                        backend: str = "torch", remove_constraints: bool = True,
                        device: Optional[str] = None) -> openmm.System:
    """A copy of the classical ``system`` in which the model describes the atoms ``ml_atoms``
    (mechanical embedding, in the spirit of OpenMM-ML's ``createMixedSystem``).

    Bonded terms (bonds, angles, torsions, CMAP, custom bonded forces) whose
    particles all lie in the ML region are removed, nonbonded interactions
    between two ML atoms are excluded (``NonbondedForce`` exceptions with zero
    charge product and epsilon, ``CustomNonbondedForce`` exclusions), and, with
    ``remove_constraints``, so are constraints inside the ML region. ML–MM
    interactions stay classical. The model acts on the ML atoms only.
    """
    ml = sorted({int(i) for i in ml_atoms})
    n_particles = system.getNumParticles()
    if not ml:
        raise MLMDError("create_mixed_system: ml_atoms is empty; list the particles the model describes")
    if ml[0] < 0 or ml[-1] >= n_particles:
        raise MLMDError(f"create_mixed_system: ml_atoms must be particle indices in [0, {n_particles})")
    if topology.getNumAtoms() != n_particles:
        raise MLMDError(f"create_mixed_system: the topology has {topology.getNumAtoms()} atoms but the system "
                        f"has {n_particles} particles; pass the topology the system was built from")
    ml_set = set(ml)
    openmmtorch = sys.modules.get("openmmtorch")
    for force in system.getForces():
        if openmmtorch is not None and openmmtorch.TorchForce.isinstance(force):
            # This function copies the system through XmlSerializer, and deserializing a TorchForce
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

    document = ElementTree.fromstring(openmm.XmlSerializer.serialize(system))
    forces = document.find("Forces")
    for element in forces if forces is not None else []:
        if element.get("type") in _BONDED_FORCES:
            for terms in element:
                if terms.tag in _TERM_LISTS:
                    for term in list(terms):
                        particles = [int(v) for k, v in term.attrib.items() if _PARTICLE_ATTRIBUTE.match(k)]
                        if particles and ml_set.issuperset(particles):
                            terms.remove(term)
    mixed = openmm.XmlSerializer.deserialize(ElementTree.tostring(document, encoding="unicode"))

    if remove_constraints:
        for index in reversed(range(mixed.getNumConstraints())):
            i, j, _ = mixed.getConstraintParameters(index)
            if i in ml_set and j in ml_set:
                mixed.removeConstraint(index)
    pairs = [(i, j) for a, i in enumerate(ml) for j in ml[a + 1:]]
    for force in mixed.getForces():
        if isinstance(force, openmm.NonbondedForce):
            for i, j in pairs:
                force.addException(i, j, 0.0, 1.0, 0.0, True)
        elif isinstance(force, openmm.CustomNonbondedForce):
            existing = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
            for pair in pairs:
                if pair not in existing:
                    force.addExclusion(*pair)

    numbers = _topology_numbers(topology, ml)
    all_numbers = np.zeros(n_particles, dtype=np.int64)
    all_numbers[ml] = numbers
    mixed.addForce(create_force(model, atomic_numbers=all_numbers, atom_indices=ml,
                                periodic=mixed.usesPeriodicBoundaryConditions(), backend=backend,
                                device=device))
    return mixed


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
        cell, rotation = atoms.cell.standard_form()
        cell = np.array(cell)
        if np.linalg.det(cell) <= 0 or (np.diag(cell) <= 0).any():
            raise StructureError("topology_from_atoms: the cell is singular or left-handed; OpenMM needs "
                                 "right-handed lattice vectors spanning a volume")
        positions = positions @ rotation.T
        a, b, c = cell
        c = c - b * round(c[1] / b[1])
        c = c - a * round(c[0] / a[0])
        b = b - a * round(b[0] / a[0])
        topology.setPeriodicBoxVectors([openmm.Vec3(*(v * ANGSTROM_NM)) for v in (a, b, c)] * unit.nanometer)
    return topology, unit.Quantity(positions * ANGSTROM_NM, unit.nanometer)


def _numbers_and_periodicity(atoms, atomic_numbers, periodic) -> Tuple[np.ndarray, bool]:
    if (atoms is None) == (atomic_numbers is None):
        raise MLMDError("create_force needs exactly one of atoms= (ASE Atoms) or atomic_numbers=")
    if atoms is not None:
        numbers = np.asarray(atoms.numbers, dtype=np.int64)
        if periodic is None:
            pbc = np.asarray(atoms.pbc, dtype=bool)
            if pbc.any() and not pbc.all():
                raise StructureError(
                    f"create_force: OpenMM boxes are periodic in all three directions or none, got "
                    f"pbc={pbc.tolist()}; add vacuum along the non-periodic axes and set pbc=True"
                )
            periodic = bool(pbc.all())
    else:
        numbers = np.asarray(list(atomic_numbers), dtype=np.int64)
    if numbers.ndim != 1 or len(numbers) == 0:
        raise MLMDError("create_force: the atomic numbers must be a non-empty 1-D list")
    return numbers, bool(periodic)


def _check_species(numbers: np.ndarray, model: Model, source: str) -> None:
    unknown = sorted(set(numbers.tolist()) - set(model.species))
    if unknown:
        from ase.data import chemical_symbols

        def name(z: int) -> str:
            return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}"

        raise StructureError(
            f"{source}: element(s) {', '.join(name(z) for z in unknown)} are not known to the model (it was "
            f"trained on {', '.join(name(z) for z in model.species)}); use a model trained on these elements"
        )


def _topology_numbers(topology: app.Topology, indices: Optional[List[int]] = None) -> np.ndarray:
    atoms = list(topology.atoms())
    chosen = atoms if indices is None else [atoms[i] for i in indices]
    missing = [a for a in chosen if a.element is None]
    if missing:
        raise StructureError(
            f"topology atom(s) {', '.join(f'{a.index} ({a.name})' for a in missing[:5])} have no element "
            "(virtual sites or unknown atom types); the model needs every atom's element"
        )
    return np.array([a.element.atomic_number for a in chosen], dtype=np.int64)


def _model_source(model: Model) -> Union[str, bytes]:
    """The model file's absolute path, or the exported model as bytes when it has no file."""
    if model.path is not None and Path(model.path).is_file():
        return str(Path(model.path).resolve())
    module = model.module
    if not isinstance(module, torch.jit.ScriptModule):
        module = torch.jit.script(module)
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files={METADATA_FILE: json.dumps(model.metadata)})
    return buffer.getvalue()


_TORCH_PLUGIN_FAILURE = re.compile(r"^Error loading library (.*libOpenMMTorch[^/\\:]*)")
_RETRIED_PLUGINS = set()


def _import_openmmtorch():
    """openmmtorch, ready to use.

    Its extension and its OpenMM plugins link torch's (CUDA) libraries, which
    only torch's own loader finds: importing torch first is enough for the
    extension, but OpenMM loads its plugins when ``openmm`` is first imported,
    so if that happened before torch the plugins failed and are loaded again
    here. Also silences the root-logger warning of its ``simtk.openmm`` import.
    """
    try:
        with _quiet_root_logger():
            import openmmtorch
    except (ImportError, OSError) as exc:
        raise MLMDError(
            f"openmm-torch is not usable here ({type(exc).__name__}: {exc}); install it "
            "(pip install openmmtorch, or conda install -c conda-forge openmm-torch) or use backend='python'"
        ) from exc
    for failure in openmm.Platform.getPluginLoadFailures():
        match = _TORCH_PLUGIN_FAILURE.match(failure)
        if match and match.group(1) not in _RETRIED_PLUGINS:
            _RETRIED_PLUGINS.add(match.group(1))
            try:
                openmm.Platform.loadPluginLibrary(match.group(1))
            except Exception:  # a GPU plugin on a machine without that GPU runtime stays unavailable
                pass
    return openmmtorch


@contextlib.contextmanager
def _quiet_root_logger():
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


__all__ = ["BACKENDS", "PythonForceComputation", "TorchForceModule", "create_force", "create_mixed_system",
           "create_system", "topology_from_atoms"]
