"""``mlmd export``: a training checkpoint (or an exported model) written in a registered format.

Formats register by name with :func:`register_export_format`; built-in ones
live in their engine packages and are imported on first use, others plug in
through the ``mlmd.export_formats`` entry-point group. A format is a function
``write(model, output, overwrite) -> Path`` that takes a loaded
:class:`mlmd.model.Model` and writes ``output`` atomically; each format checks
its own output against the ASE calculator before it writes and refuses to
write a file that disagrees (:class:`ExportMismatch`).

- ``torchscript``: mlmd's own model file (every mlmd engine loads it);
- ``metatomic``: a metatomic ``AtomisticModel`` (:mod:`mlmd.metatomic`);
- ``uf3``: the coefficient file of LAMMPS's ``pair_style uf3`` (spline models, :mod:`mlmd.lammps`).
"""

import os
import tempfile
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Dict, Union

from ..errors import MLMDError
from ..registry import load_registered
from .checkpoint import load_checkpoint
from .models import build_model, default_dtype
from .registry import register_in

PathLike = Union[str, os.PathLike]

#: ``write(model, output, overwrite) -> Path`` by format name.
EXPORT_FORMATS: Dict[str, Callable[..., Path]] = {}

# Built-in formats live beside the engine that reads them; importing the module registers the format.
BUILTIN_FORMAT_MODULES = {"metatomic": "mlmd.metatomic.export", "uf3": "mlmd.lammps.uf3"}

DEFAULT_FORMAT = "torchscript"


class ExportMismatch(MLMDError):
    """An exported file whose numbers disagree with the ASE calculator on the same model (nothing was written)."""


def register_export_format(name: str):
    """Function decorator: make ``write(model, output, overwrite)`` the export format ``name``."""
    return register_in(EXPORT_FORMATS, name)


def export_format(name: str) -> Callable[..., Path]:
    """The writer of format ``name`` (built-in modules and ``mlmd.export_formats`` entry points load on demand)."""
    writer = load_registered(name, EXPORT_FORMATS, BUILTIN_FORMAT_MODULES, "mlmd.export_formats",
                             lambda found, write: register_export_format(found)(write))
    if writer is None:
        known = sorted({DEFAULT_FORMAT} | set(EXPORT_FORMATS) | set(BUILTIN_FORMAT_MODULES)
                       | {entry.name for entry in entry_points(group="mlmd.export_formats")})
        raise MLMDError(f"unknown export format {name!r}; choose one of {', '.join(known)}")
    return writer


def checkpoint_module(checkpoint: PathLike, best: bool = False):
    """The potential of a training checkpoint with its EMA weights (``best``: those of the best
    validation epoch), in eval mode, and the metadata :func:`mlmd.model.export_model` adds to it."""
    import torch

    data = load_checkpoint(checkpoint)
    if best and data.get("kind") != "best":
        weights = data.get("best_ema")
        if weights is None:
            raise MLMDError(f"checkpoint {checkpoint} has no best weights yet (no epoch finished); "
                            "export without --best")
        epoch = data["best_epoch"]
    else:
        weights, epoch = data["ema"], data["epoch"]
    dtype = getattr(torch, data["dtype"])
    with default_dtype(dtype):
        module = build_model(data["family"], data["model_config"])
    module = module.to(dtype)
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise MLMDError(f"the weights in {checkpoint} do not fit model family {data['family']!r} as installed "
                        f"({str(exc).splitlines()[0]}); use the mlmd version that wrote it") from exc
    module.eval()
    training = {"epoch": int(epoch), "weights": "best EMA" if (best or data.get("kind") == "best") else "EMA"}
    return module, {"training_data_hash": data["data_hash"], "training": training}


def export_checkpoint(checkpoint: PathLike, output: PathLike, best: bool = False, overwrite: bool = False,
                      **metadata: Any):
    """Write the EMA weights of a training checkpoint (``best``: those of the best
    validation epoch) as an exported model file; returns its path. ``metadata``
    goes into the model file's metadata beside the standard keys. An existing
    ``output`` is replaced only with ``overwrite`` (checked before any work)."""
    from ..io import check_destination
    from ..model import export_model

    check_destination(output, "model file", overwrite)
    module, standard = checkpoint_module(checkpoint, best)
    return export_model(module, output, **standard, **metadata)


def is_checkpoint(source: PathLike) -> bool:
    """True for a training checkpoint or output folder of ``mlmd train``, False for an exported model file."""
    import zipfile

    from ..model import METADATA_FILE

    path = Path(source)
    if path.is_dir() or not zipfile.is_zipfile(path):
        return True  # load_checkpoint names the problem if it is not a checkpoint either
    with zipfile.ZipFile(path) as archive:
        return not any(name.endswith("extra/" + METADATA_FILE) for name in archive.namelist())


def export(source: PathLike, output: PathLike, format: str = DEFAULT_FORMAT, best: bool = False,
           overwrite: bool = False) -> Path:
    """Write ``source`` (a training checkpoint, or an exported model file or shipped model name for
    formats other than ``torchscript``) to ``output`` in ``format``; returns the path written."""
    from ..io import check_destination
    from ..model import load_model

    writer = None if format == DEFAULT_FORMAT else export_format(format)
    if writer is None:
        return export_checkpoint(source, output, best=best, overwrite=overwrite)
    check_destination(output, f"{format} file", overwrite)
    if Path(source).exists() and is_checkpoint(source):
        with tempfile.TemporaryDirectory() as folder:
            model = load_model(export_checkpoint(source, Path(folder) / "model.pt", best=best), skin_A=0.0)
            return writer(model, Path(output), overwrite)
    return writer(load_model(source, skin_A=0.0), Path(output), overwrite)


def probe_structures(model, seed: int = 0):
    """Structures an export is checked on: a periodic cell and an isolated cluster of the model's
    species on a jittered 2.3 Å cubic grid, so that every species meets the others within a typical
    cutoff and no pair is closer than about 1.6 Å (ASE Atoms, deterministic for a ``seed``)."""
    import numpy as np
    from ase import Atoms

    rng = np.random.default_rng(seed)
    species = list(model.species)
    structures = []
    for periodic in (True, False):
        n_atoms = max(8, 2 * len(species))
        numbers = [species[i % len(species)] for i in range(n_atoms)]
        # A jittered simple-cubic arrangement at 2.3 Å spacing: no pair closer than about 1.6 Å.
        side = int(np.ceil(n_atoms ** (1 / 3)))
        grid = np.array([(i, j, k) for i in range(side) for j in range(side) for k in range(side)])[:n_atoms]
        positions = 2.3 * grid + rng.uniform(-0.3, 0.3, size=(n_atoms, 3))
        cell = np.eye(3) * 2.3 * side if periodic else np.zeros((3, 3))
        structures.append(Atoms(numbers=numbers, positions=positions, cell=cell, pbc=periodic))
    return structures


def check_against_calculator(format: str, model, evaluate, structures=None, rtol: float = 1e-5,
                             atol_eV: float = 1e-6) -> float:
    """Compare ``evaluate(atoms) -> (energy_eV, forces_eV_per_A)`` of an exported file with mlmd's
    ASE calculator on :func:`probe_structures`; raise :class:`ExportMismatch` when energy or any force
    component differs by more than ``atol_eV + rtol * scale``. Returns the largest difference (eV, eV/Å)."""
    import numpy as np

    from ..ase.calculator import MLMDCalculator

    calculator = MLMDCalculator(model)
    worst = 0.0
    for atoms in structures if structures is not None else probe_structures(model):
        reference = atoms.copy()
        reference.calc = calculator
        energy_ref, forces_ref = reference.get_potential_energy(), reference.get_forces()
        energy, forces = evaluate(atoms.copy())
        scale = max(abs(energy_ref), float(np.abs(forces_ref).max(initial=0.0)), 1.0)
        difference = max(abs(energy - energy_ref), float(np.abs(np.asarray(forces) - forces_ref).max(initial=0.0)))
        worst = max(worst, difference)
        if not difference <= atol_eV + rtol * scale:
            raise ExportMismatch(f"the {format} export disagrees with mlmd's ASE calculator by {difference:.3g} "
                                 f"(eV or eV/Å) on a {len(atoms)}-atom {'periodic' if atoms.pbc.any() else 'isolated'}"
                                 f" structure; nothing was written. Report this with the model file")
    return worst
