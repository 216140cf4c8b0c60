"""File helpers: atomic writes and structure reading with clear errors.

Every file mlmd writes goes through :func:`atomic_write`: the data is written
to a temporary file in the destination folder, flushed to disk, and renamed
into place, so a crash leaves either the old file or the new one, never half.
"""

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Union

from .errors import InputFileError, StructureError

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the destination's suffix so that writers that pick
    a format from the extension (ASE, mdtraj, torch) still do the right thing.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputFileError(f"cannot write {path}: folder {folder} does not exist; create it first")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=folder)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        # mkstemp creates files readable by the owner only; give the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file for writing that replaces ``path`` when closed without error."""
    with atomic_path(path) as temporary:
        with open(temporary, mode) as stream:
            yield stream


def require_file(path: PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path if it is a readable file, else raise a clear error."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist; check the path")
    if path.is_dir():
        raise InputFileError(f"{what} {path} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"{what} {path} is not readable; check its permissions")
    return path


def read_frames(path: PathLike, index: str = ":", what: str = "structure file") -> List:
    """Read frames with ASE, turning reader failures into one clear error."""
    from ase.io import read

    path = require_file(path, what)
    try:
        frames = read(path, index=index)
    except Exception as exc:  # ASE readers raise many types; report them as one
        raise InputFileError(
            f"could not read {what} {path}: {type(exc).__name__}: {exc}. "
            "Give a file ASE can read (extended XYZ, CIF, POSCAR, PDB, ...), "
            "or name the format in the file's extension"
        ) from exc
    if not isinstance(frames, list):
        frames = [frames]
    if len(frames) == 0:
        raise InputFileError(f"{what} {path} contains no structures")
    return frames


def read_structure(path: PathLike, frame: Optional[int] = None, use_velocities: bool = True):
    """Read one frame of a structure file and check it is usable.

    A file with several frames (a dataset, a trajectory) needs ``frame`` (``--frame N``; negative
    counts from the end); velocities stored in the file are kept only with ``use_velocities``.
    """
    from .checks import check_atoms

    frames = read_frames(path, index=":")
    if frame is None:
        if len(frames) > 1:
            raise InputFileError(f"structure file {path} holds {len(frames)} frames; pick one with --frame N "
                                 f"(0 to {len(frames) - 1}, -1 for the last)")
        frame = 0
    if not -len(frames) <= frame < len(frames):
        raise InputFileError(f"--frame {frame} is out of range: structure file {path} holds {len(frames)} "
                             f"frame(s) (0 to {len(frames) - 1}, -1 for the last)")
    atoms = frames[frame]
    if not use_velocities:
        drop_velocities(atoms)
    check_atoms(atoms, source=str(path))
    return atoms


def drop_velocities(atoms) -> None:
    """Forget the velocities (momenta) an Atoms object carries, so a run draws its own."""
    atoms.arrays.pop("momenta", None)


def load_structure(structure, frame: Optional[int] = None, use_velocities: Optional[bool] = None,
                   source: str = "structure"):
    """A checked copy of the starting structure of a run: ASE Atoms (its velocities kept unless
    ``use_velocities`` is False) or a file read by :func:`read_structure` (velocities only when True)."""
    from ase import Atoms

    from .checks import check_atoms

    if not isinstance(structure, Atoms):
        return read_structure(structure, frame, bool(use_velocities))
    atoms = structure.copy()
    if use_velocities is False:
        drop_velocities(atoms)
    check_atoms(atoms, source=source)
    return atoms


def write_frames(path: PathLike, frames: List, format: str = "extxyz") -> None:
    """Write ASE frames atomically."""
    from ase.io import write

    with atomic_path(path) as temporary:
        write(temporary, frames, format=format)


def save_restart(path: PathLike, format_name: str, payload: dict) -> None:
    """Write ``{"format": format_name, "version": 1, **payload}`` with torch.save, atomically."""
    import torch

    with atomic_path(path) as temporary:
        torch.save({"format": format_name, "version": 1, **payload}, temporary)


def load_restart(path: PathLike, format_name: str) -> dict:
    """Read a file written by :func:`save_restart` with this ``format_name`` (e.g. ``"mlmd md restart"``).

    A missing, corrupt or foreign file is an InputFileError naming the kind of file expected.
    """
    import zipfile

    import torch

    path = require_file(path, "restart file")
    if not zipfile.is_zipfile(path):
        raise InputFileError(f"restart file {path} is not an {format_name} file (corrupt or another kind of file)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, OSError, EOFError) as exc:
        raise InputFileError(f"restart file {path} could not be read ({type(exc).__name__}); it is corrupt") from exc
    if not isinstance(data, dict) or data.get("format") != format_name:
        raise InputFileError(f"restart file {path} is not an {format_name} file")
    return data


def check_destination(path: Optional[PathLike], what: str, overwrite: bool = False) -> Optional[Path]:
    """``path`` as a Path after making sure a file can be written there (None passes through).

    Refused, before any work: a folder, a missing or unwritable parent folder, and an existing
    file unless ``overwrite`` (``--overwrite`` on the command line; a continued run passes True
    for the files it continues).
    """
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"cannot write the {what} {path}: it is a folder; give a file name")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise InputFileError(f"cannot write the {what} {path}: folder {path.parent} does not exist; create it first")
    if path.exists() and not overwrite:
        raise InputFileError(f"the {what} {path} already exists; pass --overwrite (overwrite=True) to replace it, "
                             "or choose another name")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise InputFileError(f"cannot write the {what} {path} ({exc.strerror}); "
                             "choose a folder you can write to") from None
    return path


def check_destinations(destinations, overwrite: bool = False) -> None:
    """:func:`check_destination` on every ``(path, what)`` pair (None paths skipped), all before any work."""
    for path, what in destinations:
        check_destination(path, what, overwrite)
