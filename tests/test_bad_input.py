"""Every command against every bad input it can take: exit status 2, one line on stderr, no traceback.

The table below is the contract: a new command (or a new way to get an input wrong) adds rows here.
Commands run in this process through ``mlmd.cli.main`` (fast); one row runs in a fresh interpreter.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.io import write

import mlmd.forecast
import mlmd.md
from mlmd.calculators import CALCULATORS, register_calculator
from mlmd.cli import main
from mlmd.model import export_model
from reference_forecasters import HarmonicForecaster
from reference_potentials import LennardJonesPotential

SIGMA, EPSILON, CUTOFF = 3.405, 0.0103, 6.0  # argon


class FailingCalculator(Calculator):
    """Raises on call number ``fail_at`` (1 = the first call); counts every call."""

    implemented_properties = ["energy", "forces"]
    calls = 0

    def __init__(self, fail_at: int):
        super().__init__()
        self.fail_at = fail_at

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        FailingCalculator.calls += 1
        if FailingCalculator.calls >= self.fail_at:
            raise KeyError("no parameters for this element")  # not an ASE error type: any exception counts
        self.results = {"energy": 0.0, "forces": np.zeros((len(atoms), 3))}


@pytest.fixture(scope="module", autouse=True)
def one_thread_and_test_calculators():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    register_calculator("fails-at-once")(lambda: FailingCalculator(1))
    register_calculator("fails-later")(lambda: FailingCalculator(4))
    yield
    CALCULATORS.pop("fails-at-once")
    CALCULATORS.pop("fails-later")
    torch.set_num_threads(threads)


def argon(seed=1):
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True)  # 4 atoms: tiny
    atoms.rattle(0.05, seed=seed)
    return atoms


def water():
    return Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad (and a few good) input file, made once."""
    folder = tmp_path_factory.mktemp("inputs")
    f = {"dir": folder}
    write(folder / "ar.xyz", argon())
    write(folder / "frames.xyz", [argon(1), argon(2)])
    write(folder / "cu.xyz", bulk("Cu", cubic=True))
    write(folder / "water.xyz", water())
    write(folder / "frh.xyz", Atoms("FrH", positions=[[0, 0, 0], [0, 0, 2.3]]))
    (folder / "empty.xyz").write_text("")
    (folder / "garbage.xyz").write_text("this is not\na structure file\n")
    nan = argon()
    nan.positions[1, 0] = np.nan
    write(folder / "nan.xyz", nan)
    singular = argon()
    singular.cell[2] = [0, 0, 0]
    write(folder / "singular.xyz", singular)
    export_model(LennardJonesPotential([18], SIGMA, EPSILON, CUTOFF).double(), folder / "lj.pt")
    (folder / "truncated.pt").write_bytes((folder / "lj.pt").read_bytes()[:2000])
    export_model(HarmonicForecaster(torch.tensor(water().positions), torch.tensor([0.2, 0.3, 0.4]), 10.0, [1, 8]),
                 folder / "forecaster.pt")
    (folder / "existing.csv").write_text("keep me\n")
    (folder / "existing.json").write_text("{}\n")
    (folder / "a-folder").mkdir()
    (folder / "folder.h5").mkdir()
    (folder / "not-a-folder").write_text("a file\n")
    (folder / "bad.json").write_text('{"model": ')
    (folder / "mode.txt").write_text("not numbers\n")
    # runs that left restart files at step 10 / interval 10
    mlmd.md.run(argon(), model=folder / "lj.pt", steps=10, stride=5, log=folder / "done.csv",
                restart_file=folder / "done.restart", temperature_K=50.0, timestep_fs=2.0)
    mlmd.forecast.run(water(), folder / "forecaster.pt", steps=10, log=folder / "fdone.csv",
                      restart_file=folder / "fdone.restart")
    return f


CUDA = torch.cuda.is_available()
UNWRITABLE = "/proc/mlmd-cannot-write-here.csv"  # not writable even by root

# (command, arguments, expected exit status, expected text in the one stderr line)
CASES = [
    # mlmd md
    ("md", ["missing.xyz", "--model", "{lj.pt}"], 2, "does not exist"),
    ("md", ["{empty.xyz}", "--model", "{lj.pt}"], 2, "could not read structure file"),
    ("md", ["{garbage.xyz}", "--model", "{lj.pt}"], 2, "could not read structure file"),
    ("md", ["{nan.xyz}", "--model", "{lj.pt}"], 2, "NaN or infinite coordinates"),
    ("md", ["{singular.xyz}", "--model", "{lj.pt}"], 2, "the cell is singular"),
    ("md", ["{cu.xyz}", "--model", "{lj.pt}"], 2, "not known to the model"),
    ("md", ["{ar.xyz}", "--model", "{truncated.pt}"], 2, "not a TorchScript archive"),
    ("md", ["{ar.xyz}", "--model", "no-such-model"], 2, "model file no-such-model does not exist"),
    ("md", ["{ar.xyz}", "--model", "{lj.pt}", "--integrator", "leapfrog"], 2, "not available with the torch"),
    ("md", ["{ar.xyz}", "--calculator", "no-such-calculator"], 2, "unknown calculator"),
    ("md", ["{ar.xyz}", "--model", "{lj.pt}", "--device", "bogus"], 2, "unknown --device 'bogus'; use cpu or cuda"),
    *([] if CUDA else [("md", ["{ar.xyz}", "--model", "{lj.pt}", "--device", "cuda"], 2,
                        "torch sees no CUDA device")]),
    ("md", ["{ar.xyz}", "--model", "{lj.pt}", "--threads", "0"], 2, "--threads must be a whole number >= 1"),
    ("md", ["{ar.xyz}", "--model", "{lj.pt}", "--log", "{a-folder}"], 2, "it is a folder"),
    ("md", ["{ar.xyz}", "--model", "{lj.pt}", "--log", "{not-a-folder}/md.csv"], 2, "does not exist; create it"),
    ("md", ["{ar.xyz}", "--model", "{lj.pt}", "--log", UNWRITABLE], 2, "choose a folder you can write to"),
    ("md", ["{ar.xyz}", "--model", "{lj.pt}", "--log", "{existing.csv}"], 2, "already exists; pass --overwrite"),
    ("md", ["{ar.xyz}", "--model", "{lj.pt}", "--log", "{done.csv}", "--restart", "{done.restart}",
            "--steps", "10"], 2, "is at step 10, and --steps 10 is the total length"),
    ("md", ["{ar.xyz}", "--model", "{lj.pt}", "--log", "{done.csv}", "--restart", "{done.restart}",
            "--steps", "5"], 2, "give a larger --steps"),
    ("md", ["{frames.xyz}", "--model", "{lj.pt}"], 2, "holds 2 frames; pick one with --frame N"),
    ("md", ["{frames.xyz}", "--model", "{lj.pt}", "--frame", "5"], 2, "--frame 5 is out of range"),
    ("md", ["{ar.xyz}", "--calculator", "fails-at-once"], 2,
     "the calculator fails-at-once failed on the starting structure (KeyError"),
    ("md", ["{frh.xyz}", "--calculator", "gfn2"], 2, "No support for elements with Z >86"),
    ("md", ["{water.xyz}", "--model", "{forecaster.pt}"], 2, "is a trajectory forecaster, not a potential"),
    ("md", ["{water.xyz}", "--model", "{forecaster.pt}", "--engine", "openmm"], 2, "is a trajectory forecaster"),
    # mlmd forecast
    ("forecast", ["missing.xyz", "--model", "{forecaster.pt}", "--steps", "2"], 2, "does not exist"),
    ("forecast", ["{garbage.xyz}", "--model", "{forecaster.pt}", "--steps", "2"], 2, "could not read"),
    ("forecast", ["{water.xyz}", "--model", "{truncated.pt}", "--steps", "2"], 2, "not a TorchScript archive"),
    ("forecast", ["{ar.xyz}", "--model", "{lj.pt}", "--steps", "2"], 2, "potential, not a trajectory forecaster"),
    ("forecast", ["{water.xyz}", "--model", "{forecaster.pt}", "--time", "soon"], 2, "cannot read the time"),
    ("forecast", ["{water.xyz}", "--model", "{forecaster.pt}", "--steps", "2", "--device", "bogus"], 2,
     "unknown --device 'bogus'"),
    ("forecast", ["{water.xyz}", "--model", "{forecaster.pt}", "--steps", "2", "--log", "{existing.csv}"], 2,
     "already exists; pass --overwrite"),
    ("forecast", ["{water.xyz}", "--model", "{forecaster.pt}", "--steps", "2", "-o", "{folder.h5}"], 2,
     "it is a folder"),
    ("forecast", ["{water.xyz}", "--model", "{forecaster.pt}", "--steps", "10", "--log", "{fdone.csv}",
                  "--restart", "{fdone.restart}"], 2, "give a longer --time or --steps"),
    ("forecast", ["{frames.xyz}", "--model", "{forecaster.pt}", "--steps", "2"], 2, "pick one with --frame"),
    # mlmd saddle
    ("saddle", ["missing.xyz", "--calculator", "lj"], 2, "does not exist"),
    ("saddle", ["{nan.xyz}", "--calculator", "lj"], 2, "NaN or infinite coordinates"),
    ("saddle", ["{frames.xyz}", "--calculator", "lj"], 2, "pick one with --frame"),
    ("saddle", ["{ar.xyz}", "--calculator", "no-such-calculator"], 2, "unknown calculator"),
    ("saddle", ["{ar.xyz}", "--model", "{truncated.pt}"], 2, "not a TorchScript archive"),
    ("saddle", ["{ar.xyz}", "--calculator", "lj", "--device", "bogus"], 2, "unknown --device 'bogus'"),
    *([] if CUDA else [("saddle", ["{ar.xyz}", "--calculator", "lj", "--device", "cuda"], 2,
                        "torch sees no CUDA device")]),
    ("saddle", ["{ar.xyz}", "--calculator", "lj", "--mode", "{mode.txt}"], 2, "could not read mode file"),
    ("saddle", ["{ar.xyz}", "--calculator", "lj", "--json", "{existing.json}"], 2, "already exists; pass --overwrite"),
    ("saddle", ["{ar.xyz}", "--calculator", "lj", "-o", "{not-a-folder}/s.xyz"], 2, "does not exist; create it"),
    ("saddle", ["{ar.xyz}", "--calculator", "fails-at-once", "-o", "{dir}/s1.xyz", "--mode-output",
                "{dir}/s1.txt", "--plot", "{dir}/s1.png"], 2, "the potential failed (KeyError"),
    ("saddle", ["{frh.xyz}", "--calculator", "gfn2", "-o", "{dir}/s2.xyz", "--mode-output", "{dir}/s2.txt",
                "--plot", "{dir}/s2.png"], 2, "Z >86"),
    # mlmd generate
    ("generate", ["unobtainium"], 2, "unknown system"),
    ("generate", ["ar", "--frames", "2", "-o", "{existing.csv}"], 2, "already exists; pass --overwrite"),
    ("generate", ["ar", "--frames", "2", "-o", "{a-folder}"], 2, "it is a folder"),
    ("generate", ["ethanol", "--structure", "-o", "{not-a-folder}/e.xyz"], 2, "does not exist; create it"),
    # mlmd train and export
    ("train", ["missing.json"], 2, "does not exist"),
    ("train", ["{bad.json}"], 2, "is not valid JSON"),
    ("train", ["{bad.json}", "--threads", "0"], 2, "--threads must be a whole number >= 1"),
    ("export", ["missing.pt", "-o", "{dir}/model.pt"], 2, "does not exist"),
    ("export", ["{bad.json}", "-o", "{dir}/model.pt"], 2, "could not be read"),
    ("export", ["{bad.json}", "-o", "{existing.csv}"], 2, "already exists; pass --overwrite"),
    # mlmd demo (takes a model)
    ("demo", ["--model", "{truncated.pt}", "-o", "{dir}/demo", "--steps", "2", "--quiet"], 2,
     "not a TorchScript archive"),
    ("demo", ["--steps", "0"], 2, "--steps and --replicas must be at least 1"),
]


def fill(argument: str, files) -> str:
    folder = files["dir"]
    if argument.startswith("{") and "}" in argument:
        name, rest = argument[1:].split("}", 1)
        return str(folder if name == "dir" else folder / name) + rest
    return argument


@pytest.mark.parametrize("command, arguments, status, text", CASES,
                         ids=[f"{c}-{i}" for i, (c, *_) in enumerate(CASES)])
def test_bad_input_ends_with_one_line_and_status_2(files, capsys, monkeypatch, command, arguments, status, text):
    monkeypatch.chdir(files["dir"])
    quiet = ["--quiet"] if command in ("md", "forecast", "saddle", "generate", "train") else []
    found = main([command, *(fill(a, files) for a in arguments), *quiet])
    error = capsys.readouterr().err.strip()
    assert found == status, error
    assert "\n" not in error and "Traceback" not in error
    assert error.startswith(f"mlmd {command}: error: ")
    assert f"mlmd {command}: error: mlmd" not in error  # one prefix
    assert text in error, error


def test_existing_outputs_are_kept_and_nothing_runs(files, capsys, monkeypatch):
    """Without --overwrite an existing log stops `mlmd md` before the first force call; with it, the run goes."""
    folder = files["dir"]
    FailingCalculator.calls = 0
    (folder / "kept.csv").write_text("keep me\n")
    arguments = ["md", str(folder / "ar.xyz"), "--calculator", "fails-later", "--steps", "2", "--stride", "1",
                 "--log", str(folder / "kept.csv"), "--quiet"]
    assert main(arguments) == 2
    assert FailingCalculator.calls == 0 and (folder / "kept.csv").read_text() == "keep me\n"
    assert not (folder / "kept.restart").exists()
    capsys.readouterr()
    assert main([*arguments, "--calculator", "lj", "--overwrite"]) == 0
    assert (folder / "kept.csv").read_text().startswith("step,time_fs")


def test_a_calculator_failing_mid_run_stops_with_the_last_good_state(files, capsys):
    folder = files["dir"]
    FailingCalculator.calls = 0
    status = main(["md", str(folder / "ar.xyz"), "--calculator", "fails-later", "--steps", "10", "--stride", "1",
                   "--log", str(folder / "midway.csv"), "--quiet"])
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error and "KeyError" in error and "last good state (step 2)" in error
    rows = np.loadtxt(folder / "midway.csv", delimiter=",", skiprows=1, ndmin=2)
    assert rows[-1, 0] == 2
    assert (folder / "midway.restart").exists() and (folder / "midway.last_good.xyz").exists()


def test_one_case_in_a_fresh_interpreter(files):
    """The same contract through `python -m mlmd` (entry points, exit status, stderr)."""
    done = subprocess.run([sys.executable, "-m", "mlmd", "saddle", str(files["dir"] / "ar.xyz"), "--calculator", "lj",
                           "--device", "bogus"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2
    assert done.stderr.strip() == "mlmd saddle: error: unknown --device 'bogus'; use auto, cpu or cuda"


def test_a_50_fs_step_stops_with_a_clear_message_and_the_last_good_state(tmp_path, capsys, monkeypatch):
    """Ethanol with the shipped model at 50 fs per step heats to ~1e5 K within 10 steps (it used to exit 0
    with a normal summary): the temperature guard stops it, exit 2, and the last good state is on disk."""
    from ase.build import molecule

    monkeypatch.chdir(tmp_path)
    write("ethanol.xyz", molecule("CH3CH2OH"))
    status = main(["md", "ethanol.xyz", "--model", "ethanol", "--timestep", "50", "--steps", "100", "--stride", "10",
                   "--log", "md.csv", "--trajectory", "md.h5", "--quiet"])
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error and "Traceback" not in error
    assert error.startswith("mlmd md: error: the simulation became unstable between steps 0 and 10")
    assert "above the bound" in error and "--timestep" in error
    rows = np.loadtxt("md.csv", delimiter=",", skiprows=1, ndmin=2)
    assert rows[:, 0].tolist() == [0.0]
    saved = torch.load("md.restart", weights_only=True)
    assert saved["step"] == 0
    from ase.io import read

    last_good = read("md.last_good.xyz")
    np.testing.assert_allclose(last_good.positions, molecule("CH3CH2OH").positions, atol=1e-12)


def test_frame_and_velocities_of_a_structure_file_are_used_only_when_asked(files, tmp_path):
    """A dataset-like file: frame 1 of 2, with stored velocities; they are used only with use_velocities."""
    frames = [argon(1), argon(2)]
    stored = np.random.default_rng(0).normal(size=(len(frames[1]), 3)) * 0.02  # Å/(ASE time)
    for atoms in frames:
        atoms.set_velocities(stored)
    write(tmp_path / "dataset.xyz", frames)
    common = dict(model=files["dir"] / "lj.pt", steps=0, temperature_K=50.0)
    drawn = mlmd.md.run(tmp_path / "dataset.xyz", frame=1, **common)
    from ase import units

    np.testing.assert_allclose(drawn.positions[0], frames[1].positions, atol=1e-6)
    assert not np.allclose(drawn.positions[0], frames[0].positions, atol=1e-3)
    assert not np.allclose(drawn.velocities[0], 0.0)
    assert not np.allclose(drawn.velocities[0] / units.fs, stored, atol=1e-3)
    kept = mlmd.md.run(tmp_path / "dataset.xyz", frame=-1, use_velocities=True, **common)
    np.testing.assert_allclose(kept.velocities[0] / units.fs, stored, rtol=1e-6)


def test_threads_apply_during_the_run_and_are_restored(files):
    seen = []
    before = torch.get_num_threads()
    mlmd.md.run(argon(), model=files["dir"] / "lj.pt", steps=2, stride=1, threads=before + 1,
                observers=[(lambda: seen.append(torch.get_num_threads()), 1)])
    assert seen == [before + 1] * 3 and torch.get_num_threads() == before
    mlmd.md.run(argon(), model=files["dir"] / "lj.pt", steps=1, stride=1,
                observers=[(lambda: seen.append(torch.get_num_threads()), 1)])
    from mlmd.model import DEFAULT_THREADS

    assert seen[3:] == [DEFAULT_THREADS] * 2


@pytest.mark.skipif(os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE", reason="HDF5 file locking is off")
def test_resuming_while_another_process_holds_the_trajectory_is_one_line(files, tmp_path, capsys):
    """The first run still writing md.partial.h5 (here: a process holding it open) and a second one resuming."""
    structure = str(files["dir"] / "ar.xyz")
    common = ["md", structure, "--model", str(files["dir"] / "lj.pt"), "--stride", "5", "--log",
              str(tmp_path / "md.csv"), "--trajectory", str(tmp_path / "md.h5"), "--quiet"]
    assert main([*common, "--steps", "10"]) == 0
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom mdtraj.formats import HDF5TrajectoryFile\n"
                               "h = HDF5TrajectoryFile(sys.argv[1], 'w'); print('held', flush=True); time.sleep(60)",
                               str(tmp_path / "md.partial.h5")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        status = main([*common, "--steps", "20", "--restart", str(tmp_path / "md.restart")])
    finally:
        holder.kill()
        holder.wait()
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error and "another process holds it open" in error, error
