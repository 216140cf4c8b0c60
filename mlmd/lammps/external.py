"""``fix external``: any mlmd model as LAMMPS's forces, evaluated in this Python process.

LAMMPS calls :class:`ExternalForces` after every force computation with its
local atoms; on one MPI rank those are all atoms. The callback runs the model
(:func:`mlmd.load_model`, the loader every engine shares) on the whole system in
LAMMPS's frame and hands back the forces, the energy
(``fix_external_set_energy_global``) and the virial
(``fix_external_set_virial_global``, Voigt ``xx yy zz xy xz yz`` in eV):
``W = -sigma V`` for a periodic cell and ``W = sum_i r_i (x) f_i`` for an isolated
system. LAMMPS integrates; ``thermo pe`` and ``press`` include the model.

A Python exception inside the callback cannot cross LAMMPS's C++ frames, so it
is kept, the remaining steps get zero forces, and :func:`run_external` raises it
when LAMMPS returns.
"""

import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from ..io import PathLike
from .library import LammpsError, open_lammps
from .run import VOIGT, LammpsResult, collect, input_script
from .system import write_data

FIX_ID = "mlmd"


class ExternalForces:
    """The ``fix external`` callback: ``model`` on LAMMPS's atoms (``species``: atomic number of type 1, 2...)."""

    def __init__(self, lmp, model, fix_id: str = FIX_ID):
        import torch

        self.lmp = lmp
        self.model = model
        self.fix_id = fix_id
        self.numbers = torch.tensor([0] + list(model.species), dtype=torch.int64, device=model.device)
        self.error: Optional[BaseException] = None
        self.calls = 0
        if int(lmp.extract_setting("world_size")) != 1:
            raise LammpsError("the fix external route runs on one MPI rank (it evaluates the whole system in "
                              "Python); use the uf3 export or pair_style metatomic for domain decomposition")

    def __call__(self, caller, step, nlocal, tag, x, f):
        if self.error is not None:
            f[:] = 0.0
            return
        try:
            self.evaluate(nlocal, x, f)
        except Exception as exc:  # kept and raised by run_external once LAMMPS returns (see the module)
            self.error = exc
            f[:] = 0.0

    def cell(self):
        """LAMMPS's box as a lower-triangular cell (Å) and its periodicity."""
        low, high, xy, yz, xz, periodicity, _ = self.lmp.extract_box()
        lengths = np.subtract(high, low)
        cell = np.array([[lengths[0], 0.0, 0.0], [xy, lengths[1], 0.0], [xz, yz, lengths[2]]])
        return cell, np.array(periodicity, dtype=bool)

    def evaluate(self, nlocal: int, x, f) -> None:
        import torch

        cell, pbc = self.cell()
        periodic = bool(pbc.all())
        types = torch.as_tensor(np.asarray(self.lmp.numpy.extract_atom("type")[:nlocal]), device=self.model.device)
        as_tensor = dict(dtype=self.model.dtype, device=self.model.device)
        out = self.model(torch.as_tensor(np.asarray(x[:nlocal]), **as_tensor), self.numbers[types.long()],
                         torch.as_tensor(cell, **as_tensor).unsqueeze(0),
                         torch.as_tensor(pbc, device=self.model.device).unsqueeze(0),
                         torch.zeros(nlocal, dtype=torch.int64, device=self.model.device), True, periodic)
        forces = out["forces"].detach().double().cpu().numpy()
        f[:] = forces
        if periodic:
            virial = -abs(np.linalg.det(cell)) * out["stress"][0].detach().double().cpu().numpy()
        else:
            virial = np.asarray(x[:nlocal]).T @ forces
        self.lmp.fix_external_set_energy_global(self.fix_id, float(out["energy"].sum()))
        self.lmp.fix_external_set_virial_global(self.fix_id, [float(virial[a, b]) for a, b in VOIGT])
        self.calls += 1


def run_external(model, atoms, steps: int = 0, timestep_fs: float = 1.0, thermo_every: int = 0,
                 workdir: Optional[PathLike] = None, device: str = "cpu") -> LammpsResult:
    """Run any mlmd ``model`` (file, shipped name, loaded model or potential) on ``atoms`` in LAMMPS
    through ``fix external``, in this process, on one rank; NVE for ``steps > 0`` as in
    :func:`mlmd.lammps.run_uf3`. Returns a :class:`~mlmd.lammps.run.LammpsResult`."""
    from ..model import load_model

    model = load_model(model, device=device)
    with tempfile.TemporaryDirectory() as scratch:
        folder = (Path(workdir) if workdir is not None else Path(scratch)).resolve()
        rotation, boundary = write_data(atoms, model.species, folder / "data.lmp")
        fix = [f"fix {FIX_ID} all external pf/callback 1 1", f"fix_modify {FIX_ID} energy yes virial yes"]
        setup, run = input_script(folder / "data.lmp", boundary, fix, None, steps, timestep_fs,
                                  thermo_every or max(steps, 1), folder / "forces.dump")
        lmp = open_lammps(["-log", str(folder / "log.lammps"), "-screen", "none", "-nocite"])
        forces = ExternalForces(lmp, model)
        try:
            lmp.commands_string(setup)
            lmp.set_fix_external_callback(FIX_ID, forces)
            lmp.commands_string(run)
        except Exception as exc:  # the lammps module raises a bare Exception for LAMMPS errors
            raise LammpsError(f"LAMMPS failed: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}") from exc
        finally:
            lmp.close()
        if forces.error is not None:
            raise LammpsError(f"the model failed inside fix external: {forces.error}") from forces.error
        return collect(folder, len(atoms), rotation)
