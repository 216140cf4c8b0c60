"""The run layer behind ``mlmd md`` and ``mlmd forecast``, shared by both.

- :mod:`~mlmd.dynamics.system`: ASE ``Atoms`` -> batched replica tensors, starting velocities;
- :mod:`~mlmd.dynamics.potential`: an ASE calculator as the model contract, energy monitors;
- :mod:`~mlmd.dynamics.engine`: the engine protocol and registry (``torch``, ``openmm``, ``rollout``);
- :mod:`~mlmd.dynamics.torch_engine`, :mod:`~mlmd.dynamics.rollout_engine` (the OpenMM engine is
  :mod:`mlmd.openmm.engine`);
- :mod:`~mlmd.dynamics.guards`: checks against wrong physics;
- :mod:`~mlmd.dynamics.trajectory` (trajectory writers by extension: mdtraj, H5MD, ASE) and :mod:`~mlmd.dynamics.outputs`
  (append-only CSV log, restart files, plot, last good state);
- :mod:`~mlmd.dynamics.driver`: the one run loop, with ASE-style observers and a generator form.

A new front-end (another engine, a relaxation, an enhanced-sampling scheme) needs an engine with
``step``, ``advance``, ``snapshot``, ``save_point``, ``restore`` and ``payload``, and gets outputs,
guards, restarts and observers from :class:`Driver`.
"""

from pathlib import Path
from typing import Optional

from ..io import PathLike
from .driver import Driver, RunResult, ns_per_day, summary
from .engine import (ENGINES, Engine, ForceCallFailed, MDSettings, Snapshot, engine_class, integrators_of,
                     register_engine)
from .guards import (
    DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM,
    DEFAULT_MIN_DISTANCE_A,
    Guards,
    UnstableRunError,
    default_max_temperature_K,
    guard_problem,
)
from .outputs import RunOutputs, save_state_xyz
from .system import ReplicatedSystem, replicate, starting_velocities


def read_atoms(structure, source: str):
    """A checked copy of ``structure`` (ASE Atoms, or any file ASE reads)."""
    from ase import Atoms

    from ..checks import check_atoms
    from ..io import read_structure

    if isinstance(structure, Atoms):
        atoms = structure.copy()
        check_atoms(atoms, source=source)
        return atoms
    return read_structure(structure)


def default_restart_file(log: Optional[PathLike], trajectory: Optional[PathLike], structure: PathLike) -> Path:
    """``md.csv`` -> ``md.restart`` (else the trajectory's name, else the structure's, in the working folder)."""
    if log is not None or trajectory is not None:
        return Path(log if log is not None else trajectory).with_suffix(".restart")
    return Path(Path(structure).name).with_suffix(".restart")


def default_state_file(restart_file, log, trajectory, structure) -> Optional[Path]:
    """``NAME.last_good.xyz`` beside the restart file, log or trajectory, else the structure file's name
    here; None for a structure given as Atoms to a run that writes no files."""
    for candidate in (restart_file, log, trajectory):
        if candidate is not None:
            return Path(candidate).with_suffix(".last_good.xyz")
    if isinstance(structure, (str, Path)):
        return Path(f"{Path(structure).stem}.last_good.xyz")
    return None


__all__ = ["DEFAULT_MAX_ENERGY_JUMP_EV_PER_ATOM", "DEFAULT_MIN_DISTANCE_A", "Driver", "ENGINES", "Engine",
           "ForceCallFailed", "Guards", "MDSettings", "ReplicatedSystem", "RunOutputs", "RunResult", "Snapshot",
           "UnstableRunError", "default_max_temperature_K", "default_restart_file", "default_state_file",
           "engine_class", "guard_problem", "integrators_of", "ns_per_day", "read_atoms", "register_engine",
           "replicate", "save_state_xyz", "starting_velocities", "summary"]
