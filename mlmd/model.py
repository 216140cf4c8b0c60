"""Exported models: one TorchScript file with its metadata, and the one loader every engine uses.

An exported model is a TorchScript archive whose extra file ``mlmd.json``
records the family, species (atomic numbers), cutoff (Å), dtype, units,
mlmd version, the training-data hash and the family's constructor config,
plus whatever the family's ``extra_metadata()`` adds. A forecaster (``kind``
``"forecaster"``) records ``interval_fs``, ``timestep_fs``, ``interval_steps``
and its ``normalization`` (displacement and velocity RMS).
:func:`load_model` reads it in a fresh process without any training code and
returns a :class:`Model`, which every engine adapter (ASE, OpenMM,
integrators, saddle search) consumes.
"""

import contextlib
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from .errors import InputFileError, MLMDError
from .io import PathLike, atomic_path, require_file

METADATA_FILE = "mlmd.json"
PRETRAINED_DIRECTORY = Path(__file__).resolve().parent / "pretrained_models"
UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"}
# Skin (Å) of the neighbour list a Model carries between calls: atoms may move skin/2 before a rebuild.
DEFAULT_SKIN_A = 1.0


def accepts_neighbor_lists(module: torch.nn.Module) -> bool:
    """Whether ``module.forward`` takes a precomputed ``edge_index``/``shifts`` (models exported by mlmd >= 0.2)."""
    forward = module.forward
    if hasattr(forward, "schema"):  # a TorchScript method
        names = [argument.name for argument in forward.schema.arguments]
    else:
        import inspect

        names = list(inspect.signature(forward).parameters)
    return "edge_index" in names and "shifts" in names


def model_metadata(module: torch.nn.Module, training_data_hash: str = "", **extra: Any) -> Dict[str, Any]:
    """Metadata of an in-memory potential, read from the attributes the contract defines."""
    from potentials.base import family_metadata

    from . import __version__

    dtype = next((b.dtype for b in module.buffers() if b.is_floating_point()), torch.get_default_dtype())
    metadata: Dict[str, Any] = {
        "family": getattr(module, "family", ""),
        "species": [int(z) for z in module.species],
        "cutoff": float(module.cutoff),
        "dtype": str(dtype).replace("torch.", ""),
        "units": UNITS,
        "mlmd_version": __version__,
        "training_data_hash": training_data_hash,
    }
    metadata.update(family_metadata(module))
    metadata.setdefault("kind", "potential")
    metadata.update(extra)
    return metadata


def export_model(module: torch.nn.Module, path: PathLike, training_data_hash: str = "", **extra: Any) -> Path:
    """Compile ``module`` with TorchScript and write it, with metadata, atomically to ``path``."""
    metadata = model_metadata(module, training_data_hash, **extra)
    was_training = module.training
    module.eval()
    try:
        scripted = torch.jit.script(module)
    finally:
        module.train(was_training)
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.jit.save(scripted, str(temporary), _extra_files={METADATA_FILE: json.dumps(metadata, indent=1)})
    return path


class Model:
    """A model ready for any engine: the compiled module plus its metadata.

    Calling a potential runs the model contract: ``model(positions, atomic_numbers,
    cell, pbc, batch, compute_forces=True, compute_stress=False)``. A forecaster
    (:attr:`is_forecaster`) runs through :meth:`forecast` instead and advances
    :attr:`interval_fs` per call.
    """

    def __init__(self, module: torch.nn.Module, metadata: Dict[str, Any], path: Optional[Path] = None,
                 skin_A: float = DEFAULT_SKIN_A):
        from potentials.neighbors import VerletList

        self.module = module.eval()
        self.metadata = metadata
        self.path = path
        # A Verlet list carried between calls (every engine calls through here); models exported before
        # the contract took neighbour lists build their own at every call.
        self.neighbors: Optional[VerletList] = None
        if skin_A > 0 and accepts_neighbor_lists(module):
            self.neighbors = VerletList(float(metadata["cutoff"]), skin_A)

    @property
    def species(self):
        return list(self.metadata["species"])

    @property
    def cutoff(self) -> float:
        return float(self.metadata["cutoff"])

    @property
    def family(self) -> str:
        return str(self.metadata["family"])

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.metadata["dtype"])

    @property
    def equivariance_error(self) -> Optional[Dict[str, float]]:
        """Rotation error measured on held-out frames after training, for a family whose symmetry is learned
        (``symmetry == "learned"`` in the metadata, the ``transformer``): ``energy_meV_per_atom``,
        ``force_meV_per_A``, ``force_relative`` (of the mean |F|), ``energy_vs_mae`` and ``force_vs_mae`` (of the
        model's own validation errors), ``frames`` and ``rotations``. None for a family that is equivariant by
        construction, or a learned one never measured (untrained, no validation frames, or
        ``training.equivariance_rotations = 0``)."""
        value = self.metadata.get("equivariance_error")
        return None if value is None else dict(value)

    @property
    def is_forecaster(self) -> bool:
        return self.metadata.get("kind") == "forecaster" or "interval_fs" in self.metadata

    @property
    def interval_fs(self) -> Optional[float]:
        """Time (fs) one :meth:`forecast` call advances; None for a potential."""
        value = self.metadata.get("interval_fs")
        return None if value is None else float(value)

    @property
    def device(self) -> torch.device:
        for tensor in list(self.module.parameters()) + list(self.module.buffers()):
            return tensor.device
        return torch.device("cpu")

    def to(self, device: Union[str, torch.device]) -> "Model":
        self.module.to(device)
        return self

    def __call__(self, positions, atomic_numbers, cell, pbc, batch, compute_forces: bool = True,
                 compute_stress: bool = False) -> Dict[str, torch.Tensor]:
        if self.is_forecaster:
            raise MLMDError(f"{self._name()} is a trajectory forecaster ({self.family}), not a potential: it gives no "
                            "energy or forces; run it with Model.forecast(...) or `mlmd forecast`, or use a "
                            "potential model for MD, ASE, OpenMM and saddle searches")
        if self.neighbors is None:
            return self.module(positions, atomic_numbers, cell, pbc, batch, compute_forces, compute_stress)
        edge_index, shifts = self.neighbors(positions, cell, pbc, batch)
        return self.module(positions, atomic_numbers, cell, pbc, batch, compute_forces, compute_stress, edge_index,
                           shifts)

    def energy_forces(self, positions, atomic_numbers, cell, pbc, batch) -> Dict[str, torch.Tensor]:
        """Energy ``[B]`` eV and forces ``[N,3]`` eV/Å: the callable :mod:`integrators` steps with."""
        return self(positions, atomic_numbers, cell, pbc, batch, True, False)

    def forecast(self, positions, atomic_numbers, cell, pbc, batch, velocities,
                 noise: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """One forecaster step of :attr:`interval_fs`: ``{"displacement" [N,3] Å, "velocities" [N,3] Å/fs}``.

        Inputs as the model contract plus ``velocities [N,3]`` Å/fs; new positions are
        ``positions + displacement`` (unwrapped). A stochastic forecaster samples with the standard
        normal ``noise [N,6]`` and returns its mean without it.
        """
        if not self.is_forecaster:
            raise MLMDError(f"{self._name()} is a potential ({self.family}), not a trajectory forecaster: it has no "
                            "forecast(); call it for energy and forces, or load a forecaster model "
                            "(model.family = \"forecaster\")")
        if noise is not None and not self.metadata.get("stochastic", False):
            raise MLMDError(f"{self._name()} is a deterministic forecaster: it takes no noise")
        if self.neighbors is None:
            if noise is None:
                return self.module(positions, atomic_numbers, cell, pbc, batch, velocities)
            return self.module(positions, atomic_numbers, cell, pbc, batch, velocities, None, None, noise)
        edge_index, shifts = self.neighbors(positions, cell, pbc, batch)
        if noise is None:
            return self.module(positions, atomic_numbers, cell, pbc, batch, velocities, edge_index, shifts)
        return self.module(positions, atomic_numbers, cell, pbc, batch, velocities, edge_index, shifts, noise)

    def _name(self) -> str:
        return f"model {self.path}" if self.path else "this model"

    def __repr__(self) -> str:
        interval = f", interval_fs={self.interval_fs}" if self.is_forecaster else ""
        return (f"Model(family={self.family!r}, species={self.species}, cutoff={self.cutoff}{interval}, "
                f"dtype={self.metadata['dtype']}, path={str(self.path) if self.path else None!r})")


def resolve_model_name(source: PathLike) -> PathLike:
    """``source`` itself, or the shipped model of that name (:func:`pretrained`) when no such file exists
    and the name is one (``--model ethanol``)."""
    if Path(source).exists() or not str(source).isidentifier():
        return source
    return PRETRAINED_DIRECTORY / f"{source}.pt" if (PRETRAINED_DIRECTORY / f"{source}.pt").is_file() else source


def load_model(source: Union[PathLike, Model, torch.nn.Module], device: Union[str, torch.device] = "cpu",
               skin_A: float = DEFAULT_SKIN_A) -> Model:
    """Load an exported model file, a shipped model by name (``"ethanol"``, see :func:`pretrained`),
    or wrap an in-memory potential, for use in any engine.

    ``skin_A`` is the skin of the neighbour list carried between calls (0: a fresh list at every call).
    """
    if isinstance(source, Model):
        return source.to(device)
    if isinstance(source, torch.nn.Module):
        return Model(source, model_metadata(source), skin_A=skin_A).to(device)
    path = require_file(resolve_model_name(source), "model file")
    if not zipfile.is_zipfile(path):
        raise InputFileError(
            f"model file {path} is not a TorchScript archive (corrupt, truncated, or another kind of file); "
            "export a model with `mlmd export CHECKPOINT -o MODEL.pt`"
        )
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError or ValueError for damaged archives
        raise InputFileError(
            f"model file {path} could not be loaded by TorchScript ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); the file is corrupt or was written by an "
            "incompatible torch; re-export it with `mlmd export`"
        ) from exc
    if not extra[METADATA_FILE]:
        raise InputFileError(
            f"model file {path} is a TorchScript file but not an mlmd model (no {METADATA_FILE} metadata); "
            "export it with `mlmd export`"
        )
    try:
        metadata = json.loads(extra[METADATA_FILE])
    except json.JSONDecodeError as exc:
        raise InputFileError(f"model file {path} has unreadable metadata ({exc}); re-export it") from exc
    missing = [k for k in ("family", "species", "cutoff", "dtype") if k not in metadata]
    if missing:
        raise MLMDError(f"model file {path} lacks metadata {missing}; re-export it with `mlmd export`")
    if metadata.get("symmetry") == "learned" and metadata.get("equivariance_error") is None:
        warnings.warn(f"model file {path} ({metadata['family']}) learned its rotational symmetry but carries no "
                      "measured rotation error (untrained, or trained without validation frames or with "
                      "training.equivariance_rotations = 0); measure it with "
                      "potentials.symmetry.rotation_errors before trusting forces of rotated structures", stacklevel=2)
    return Model(module, metadata, path, skin_A=skin_A)


def pretrained(name: str) -> Path:
    """Path of the small pretrained model ``name`` shipped inside the package (e.g. ``"ethanol"``).

    Each is remade by ``python scripts/train_pretrained.py NAME``; load it with :func:`load_model`.
    """
    available = sorted(p.stem for p in PRETRAINED_DIRECTORY.glob("*.pt"))
    path = PRETRAINED_DIRECTORY / f"{name}.pt"
    if not path.is_file():
        raise MLMDError(f"no pretrained model named {name!r}; available: {', '.join(available) or 'none'} "
                        "(remake one with scripts/train_pretrained.py)")
    return path


# torch CPU threads of every command and run() unless told otherwise; measured with scripts/time_threads.py
# (README, "Threads"): small systems gain nothing from intra-op threads, and threads on busy cores cost 5-10x.
DEFAULT_THREADS = 1


def check_device(device, auto: bool = False) -> None:
    """Refuse, before any work, a device torch does not know or CUDA on a machine without it
    (``auto``: also accept ``"auto"``)."""
    if auto and device == "auto":
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise MLMDError(f"unknown --device {device!r}; use {'auto, ' if auto else ''}cpu or cuda") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise MLMDError(f"--device {device} asked for but torch sees no CUDA device; use --device cpu")
    if kind not in ("cpu", "cuda"):
        raise MLMDError(f"--device {device!r} is not supported here; use {'auto, ' if auto else ''}cpu or cuda")


def check_threads(threads: int) -> int:
    """``threads`` if it is a whole number >= 1, else a one-line error."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise MLMDError(f"--threads must be a whole number >= 1, got {threads!r}")
    return threads


@contextlib.contextmanager
def torch_threads(threads: Optional[int] = None):
    """Run the block with ``threads`` torch CPU threads (None: :data:`DEFAULT_THREADS`), then restore them.

    The one thread policy of ``--threads`` and the ``threads=`` arguments.
    """
    wanted = check_threads(DEFAULT_THREADS if threads is None else threads)
    before = torch.get_num_threads()
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
