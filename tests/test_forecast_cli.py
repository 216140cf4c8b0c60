"""`mlmd forecast` end to end in a fresh interpreter, with an exported analytic forecaster."""

import numpy as np
import torch
from ase import Atoms
from ase.io import write

from mlmd.model import export_model
from reference_forecasters import BrokenForecaster, HarmonicForecaster


def water():
    return Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])


def test_forecast_command_writes_trajectory_log_and_restart(tmp_path, mlmd_cli):
    import mdtraj

    atoms = water()
    write(tmp_path / "water.xyz", atoms)
    export_model(HarmonicForecaster(torch.tensor(atoms.positions), torch.tensor([0.2, 0.3, 0.4]), 10.0, [1, 8]),
                 tmp_path / "forecaster.pt")
    done = mlmd_cli("forecast", "water.xyz", "--model", "forecaster.pt", "--time", "1ps", "--temperature", "300",
                    "--tau", "200fs", "--replicas", "2", "--calculator", "emt", "-o", "traj.h5", "--log", "log.csv",
                    "--stride", "10", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mlmd forecast: step 100 (1 ps)" in done.stdout
    assert mdtraj.load(str(tmp_path / "traj.h5")).n_frames == 11
    log = np.loadtxt(tmp_path / "log.csv", delimiter=",", skiprows=1)
    assert log.shape == (11, 5) and (tmp_path / "log.restart").exists()
    assert open(tmp_path / "log.csv").readline().strip() == "step,time_fs,ekin_eV,temperature_K,epot_eV"


def test_forecast_command_bad_inputs_give_one_line_errors(tmp_path, mlmd_cli):
    atoms = water()
    write(tmp_path / "water.xyz", atoms)
    missing = mlmd_cli("forecast", "water.xyz", "--model", "nothing.pt", "--steps", "5", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nothing.pt does not exist" in missing.stderr
    export_model(BrokenForecaster("nan", 3, 10.0, [1, 8]), tmp_path / "broken.pt")
    broken = mlmd_cli("forecast", "water.xyz", "--model", "broken.pt", "--steps", "20", "--log", "log.csv",
                      "--quiet", cwd=tmp_path)
    assert broken.returncode == 2 and broken.stderr.strip().count("\n") == 0
    assert "unstable at step 4" in broken.stderr and "log.last_good.xyz" in broken.stderr
    assert (tmp_path / "log.last_good.xyz").exists()
    bad_time = mlmd_cli("forecast", "water.xyz", "--model", "broken.pt", "--time", "soon", cwd=tmp_path)
    assert bad_time.returncode == 2 and "cannot read the time 'soon'" in bad_time.stderr
