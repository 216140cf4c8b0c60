"""Trajectories as ASE files: extended XYZ (``.xyz``, ``.extxyz``) and ASE's ``.traj``.

Each recorded frame is one image per replica (replica ``k`` of frame ``t`` is image
``t·K + k``), with ``info`` ``step``, ``time_fs`` and ``replica``, velocities
(``atoms.get_velocities()``, ASE units) and, when the engine has them, the potential
energy (eV) and forces (eV/Å) as ASE's single-point results, so that

    images = ase.io.read("md.xyz", index=":")
    images[t].get_potential_energy(), images[t].get_forces()

give what the run computed. A forecaster has no forces (none are written) and an energy
only where an energy monitor ran.
"""

from typing import List, Optional

import numpy as np

from ..io import PathLike, read_frames
from .engine import Snapshot
from .trajectory import FrameWriter, register_trajectory_format


def replica_images(atoms, positions_A: np.ndarray, velocities_A_per_fs: np.ndarray, step: int, time_fs: float,
                   epot_eV: Optional[np.ndarray] = None, forces_eV_per_A: Optional[np.ndarray] = None) -> List:
    """One ``Atoms`` per replica from arrays ``[K, N, 3]`` (energies ``[K]``), results attached when given."""
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator

    images = []
    for replica, (x, v) in enumerate(zip(positions_A, velocities_A_per_fs)):
        image = atoms.copy()
        image.calc = None
        image.set_positions(x, apply_constraint=False)
        image.set_velocities(v / units.fs)  # Å/fs -> Å/(ASE time)
        image.info.update({"step": int(step), "time_fs": float(time_fs), "replica": replica})
        results = {}
        if epot_eV is not None and np.isfinite(epot_eV[replica]):
            results["energy"] = float(epot_eV[replica])
        if forces_eV_per_A is not None:
            results["forces"] = np.array(forces_eV_per_A[replica])
        if results:
            image.calc = SinglePointCalculator(image, **results)
        images.append(image)
    return images


class AseFrameWriter(FrameWriter):
    """Images appended through ASE; ``write_images`` is the format's own appending call."""

    def __init__(self, path: PathLike, atoms, replicas: int, keep_frames: int = 0):
        super().__init__(path, atoms, replicas, keep_frames)
        kept = []
        if keep_frames:
            source = self.source_to_continue()
            kept = read_frames(source, index=f":{keep_frames * replicas}", what="trajectory")
            if len(kept) < keep_frames * replicas:
                raise self.too_few_frames(source, len(kept) // replicas, keep_frames)
        self.open_partial()
        self.write_images(kept)

    def write(self, snapshot: Snapshot, time_fs: float) -> None:
        shape = (snapshot.replicas, len(self.atoms), 3)
        forces = snapshot.forces_eV_per_A
        self.write_images(replica_images(
            self.atoms, snapshot.output_positions_A.reshape(shape), snapshot.velocities_A_per_fs.reshape(shape),
            snapshot.step, time_fs, snapshot.epot_eV, None if forces is None else forces.reshape(shape)))
        self.frames += 1

    def open_partial(self) -> None:
        raise NotImplementedError

    def write_images(self, images: List) -> None:
        raise NotImplementedError


@register_trajectory_format(".xyz", ".extxyz")
class ExtxyzWriter(AseFrameWriter):
    def open_partial(self) -> None:
        self.stream = open(self.partial, "w")

    def write_images(self, images: List) -> None:
        from ase.io import write

        if images:
            write(self.stream, images, format="extxyz")

    def flush(self) -> None:
        self.stream.flush()

    def close_handle(self) -> None:
        self.stream.close()


@register_trajectory_format(".traj")
class AseTrajectoryWriter(AseFrameWriter):
    def open_partial(self) -> None:
        from ase.io import Trajectory

        self.handle = Trajectory(str(self.partial), "w")

    def write_images(self, images: List) -> None:
        for image in images:  # ASE's writer syncs the file after every image
            self.handle.write(image)

    def close_handle(self) -> None:
        self.handle.close()
