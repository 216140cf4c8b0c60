"""Any exported mlmd model as an OpenMM force, through one of the registered backends.

Backends live in :data:`FORCE_BACKENDS` (name -> builder); :func:`register_backend`
adds one. Two ship with mlmd and compute the same thing; the default, ``"auto"``,
takes ``"torch"`` where openmm-torch is installed and works with this torch (the
``torchforce`` extra) and ``"python"`` otherwise:

- ``"torch"``: an ``openmmtorch.TorchForce`` wrapping
  :class:`TorchForceModule`, a TorchScript module that holds the model, the
  atomic numbers, the periodicity and the atom subset. OpenMM calls it with
  positions in nm (and box vectors in nm when periodic); it converts to Å,
  runs the model contract with ``compute_forces=True`` and returns
  ``(energy kJ/mol, forces kJ/mol/nm)`` with ``setOutputsForces(True)``: the
  contract computes its forces by autograd inside the model and, in eval
  mode, returns detached tensors, so TorchForce could not differentiate the
  energy itself (and measured no faster when made to). The force runs on
  whatever device the OpenMM platform uses.
- ``"python"``: an ``openmm.PythonForce`` (OpenMM >= 8.5.2) whose
  computation is a picklable :class:`PythonForceComputation`; it needs no
  openmm-torch, works with any torch, and survives ``XmlSerializer`` and
  ``pickle`` (it holds the model file's path, or the model's bytes when the
  model was never written to a file, and loads the model on first use).

Units are converted here, at the OpenMM boundary (nm and kJ/mol, with the
factors of :mod:`mlmd.constants`).
"""

import io
import json
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch  # before openmm: openmm-torch's plugins link torch's libraries, which torch loads
import openmm
from openmm import unit
from torch import Tensor

from ..constants import EV_KJ_PER_MOL, EV_PER_A_KJ_PER_MOL_NM, NM_ANGSTROM
from ..errors import MLMDError, StructureError
from potentials.neighbors import VerletList

from ..model import METADATA_FILE, Model, load_model
from .plugins import import_openmmtorch, torchforce_unavailable

#: A backend builds the force for ``(model, atomic numbers of the atoms it acts on, periodic,
#: atom indices into the System or None, device or None)`` and returns it with the loaded model.
ForceBackend = Callable[[object, np.ndarray, bool, Optional[np.ndarray], Optional[str]], Tuple[openmm.Force, Model]]

#: OpenMM force backends by the name ``create_force(backend=...)`` takes.
FORCE_BACKENDS: Dict[str, ForceBackend] = {}

#: The backend ``create_force`` and the System builders use unless told otherwise.
DEFAULT_BACKEND = "auto"


def resolve_backend(backend: str, device: Optional[str] = None) -> str:
    """``backend``, with ``"auto"`` replaced by ``"torch"`` (TorchForce usable here and no device other
    than the CPU asked for: TorchForce follows the OpenMM platform instead) or ``"python"``."""
    if backend == "auto":
        on_cpu = device is None or torch.device(device).type == "cpu"
        return "torch" if on_cpu and torchforce_unavailable() is None else "python"
    return backend


def register_backend(name: str, build: Optional[ForceBackend] = None):
    """Make ``build`` available as ``create_force(..., backend=name)``; without ``build``, a decorator."""
    if build is None:
        return lambda function: register_backend(name, function)
    FORCE_BACKENDS[name] = build
    return build


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
        out = self.contract(coordinates, cell, batch)
        energy = out["energy"].sum().to(positions.dtype) * self.energy_scale
        forces = out["forces"].to(positions.dtype) * self.force_scale
        if self.subset:
            forces = torch.zeros_like(positions).index_copy(0, self.atom_indices, forces)
        return energy, forces

    def contract(self, coordinates: Tensor, cell: Tensor, batch: Tensor) -> Dict[str, Tensor]:
        """The model contract on Å coordinates (energy eV, forces eV/Å)."""
        return self.model(coordinates, self.atomic_numbers, cell, self.pbc, batch, True, False)


class SkinTorchForceModule(TorchForceModule):
    """:class:`TorchForceModule` that carries a Verlet list (:class:`potentials.neighbors.VerletList`)
    between OpenMM's force calls, for models whose contract takes ``edge_index``/``shifts``."""

    def __init__(self, model: torch.nn.Module, atomic_numbers: Tensor, periodic: bool,
                 atom_indices: Optional[Tensor] = None, dtype: torch.dtype = torch.float64,
                 cutoff: float = 5.0, skin_A: float = 1.0):
        super().__init__(model, atomic_numbers, periodic, atom_indices, dtype)
        self.neighbors = VerletList(cutoff, skin_A)

    def contract(self, coordinates: Tensor, cell: Tensor, batch: Tensor) -> Dict[str, Tensor]:
        edge_index, shifts = self.neighbors(coordinates, cell, self.pbc, batch)
        return self.model(coordinates, self.atomic_numbers, cell, self.pbc, batch, True, False, edge_index, shifts)


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
                 periodic: Optional[bool] = None, backend: str = DEFAULT_BACKEND,
                 atom_indices: Optional[Sequence[int]] = None, device: Optional[str] = None) -> openmm.Force:
    """An OpenMM force computing ``model`` (a file, :class:`~mlmd.model.Model` or potential).

    Args:
        atoms: ASE Atoms giving the atomic numbers and, unless ``periodic`` is
            given, the periodicity (``pbc`` all True or all False).
        atomic_numbers: the atomic number of every particle of the System
            (instead of ``atoms``).
        periodic: whether the force uses OpenMM's periodic box (default: from
            ``atoms``, else False).
        backend: ``"auto"`` (default: ``"torch"`` where openmm-torch works, else
            ``"python"``) or a name in :data:`FORCE_BACKENDS`: ``"torch"``
            (openmm-torch ``TorchForce``) or ``"python"`` (``openmm.PythonForce``).
        atom_indices: apply the model to these particles only (indices into
            the System; ``atoms``/``atomic_numbers`` still describe every particle).
        device: where the ``"python"`` backend runs the model (default cpu). The
            ``"torch"`` backend runs on the OpenMM platform's device (the CUDA
            platform moves it to the GPU) and accepts no other device; with
            ``"auto"``, a device other than the CPU chooses ``"python"``.
    """
    build = FORCE_BACKENDS.get(resolve_backend(backend, device))
    if build is None:
        raise MLMDError(f"unknown OpenMM backend {backend!r}; choose one of {', '.join(['auto', *FORCE_BACKENDS])}")
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
    force, loaded = build(model, numbers, periodic, indices, device)
    force.setUsesPeriodicBoundaryConditions(periodic)
    force.setName(f"mlmd {loaded.family or 'model'}")
    return force


@register_backend("torch")
def torch_force(model, numbers: np.ndarray, periodic: bool, indices: Optional[np.ndarray],
                device: Optional[str]) -> Tuple[openmm.Force, Model]:
    """An openmm-torch ``TorchForce`` running :class:`TorchForceModule` on the OpenMM platform's device."""
    if device is not None and torch.device(device).type != "cpu":
        raise MLMDError(
            f"device={device!r} applies to backend='python'; with backend='torch' the OpenMM platform "
            "chooses the device (use the CUDA platform to run on a GPU)"
        )
    loaded = load_model(model, device="cpu")
    check_species(numbers, loaded, "create_force")
    openmmtorch = import_openmmtorch()
    arguments = (loaded.module, torch.as_tensor(numbers), periodic,
                 None if indices is None else torch.as_tensor(indices), loaded.dtype)
    if loaded.neighbors is not None:  # the model takes a neighbour list: carry one between calls
        module = SkinTorchForceModule(*arguments, cutoff=loaded.cutoff, skin_A=loaded.neighbors.skin)
    else:
        module = TorchForceModule(*arguments)
    force = openmmtorch.TorchForce(torch.jit.script(module))
    force.setOutputsForces(True)
    return force, loaded


@register_backend("python")
def python_force(model, numbers: np.ndarray, periodic: bool, indices: Optional[np.ndarray],
                 device: Optional[str]) -> Tuple[openmm.Force, Model]:
    """An ``openmm.PythonForce`` calling a :class:`PythonForceComputation` on ``device`` (default cpu)."""
    loaded = load_model(model, device=device or "cpu")
    check_species(numbers, loaded, "create_force")
    computation = PythonForceComputation(model_source(loaded), numbers, periodic, str(loaded.device))
    computation.attach(loaded)  # a pickled copy loads the model again from its source
    force = openmm.PythonForce(computation)
    if indices is not None:
        force.setParticles([int(i) for i in indices])
    return force, loaded


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


def check_species(numbers: np.ndarray, model: Model, source: str) -> None:
    """A :class:`StructureError` naming the elements in ``numbers`` that ``model`` was not trained on."""
    unknown = sorted(set(numbers.tolist()) - set(model.species))
    if unknown:
        from ase.data import chemical_symbols

        def name(z: int) -> str:
            return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}"

        raise StructureError(
            f"{source}: element(s) {', '.join(name(z) for z in unknown)} are not known to the model (it was "
            f"trained on {', '.join(name(z) for z in model.species)}); use a model trained on these elements"
        )


def model_source(model: Model) -> Union[str, bytes]:
    """The model file's absolute path, or the exported model as bytes when it has no file."""
    if model.path is not None and Path(model.path).is_file():
        return str(Path(model.path).resolve())
    module = model.module
    if not isinstance(module, torch.jit.ScriptModule):
        module = torch.jit.script(module)
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files={METADATA_FILE: json.dumps(model.metadata)})
    return buffer.getvalue()


__all__ = ["DEFAULT_BACKEND", "FORCE_BACKENDS", "ForceBackend", "PythonForceComputation", "TorchForceModule", "check_species",
           "create_force", "model_source", "python_force", "register_backend", "resolve_backend", "torch_force"]
