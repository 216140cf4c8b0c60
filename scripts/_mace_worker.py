"""The MACE side of ``scripts/benchmark_mace.py``; runs under the interpreter of MACE's own venv.

mace-torch pins an older e3nn than mlmd, so it lives in its own virtual
environment (see ``benchmark_mace.py --help``) and everything that imports
``mace`` happens here, in a subprocess. The benchmark also imports this file
(with mlmd's interpreter) for :func:`md_step_times` and :func:`predict`, so
both models are timed and evaluated by the same code; nothing at module level
imports mace.

Subcommands (each writes one JSON file named by ``--out``)::

    info                                       versions of mace-torch, torch, e3nn
    train   --workdir W --budget-min M ...     mace_run_train for M minutes of training, then the model
            [--clock cpu]                      ... M minutes of the training process's CPU time (user + system)
            [--snapshot-minutes 5,20]          ... and a model of the best checkpoint at each mark
            [--stage-two-fraction 0.8]         ... with MACE's stage two (--swa) from 80 % of the budget on
    model   --workdir W ...                    a model of the same architecture, not trained (max_num_epochs 0)
    predict --model F --xyz TEST.xyz           energies and forces of every frame (written to --npz)
    speed   --model F --structure S.xyz ...    seconds per ASE VelocityVerlet step
"""

import argparse
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ENERGY_KEY = "REF_energy"
FORCES_KEY = "REF_forces"
STARTED = "Started training"
STAGE_TWO = "Changing loss based on Stage Two Weights"
EPOCH_LINE = re.compile(r"Epoch (\d+):.*MAE_E_per_atom=\s*([-\d.eE+naif]+) meV, MAE_F=\s*([-\d.eE+naif]+)")
ECHO = re.compile(r"Started training|Initial:|Epoch \d+:|ERROR|Error|Traceback|Total number of parameters")
CHECKPOINT_NAME = re.compile(r"_epoch-(\d+)(_swa)?\.pt$")
POLL_S = 0.5  # seconds between clock readings while MACE trains


# --- shared with benchmark_mace.py (no mace import) --------------------------------------

def md_step_times(atoms, calculator, steps: int = 50, warmup: int = 10, timestep_fs: float = 0.5,
                  temperature_K: float = 300.0, seed: int = 0, clock: str = "wall"):
    """Seconds of each of ``steps`` ASE VelocityVerlet steps (after ``warmup`` steps), one force call
    per step, velocities drawn at ``temperature_K`` with ``seed``; ``clock`` "wall" (``perf_counter``)
    or "cpu" (this process's user + system time, ``process_time``)."""
    from ase import units
    from ase.md import velocitydistribution
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calculator
    # thermalize_momenta is ASE >= 3.29's name for MaxwellBoltzmannDistribution
    thermalize = getattr(velocitydistribution, "thermalize_momenta",
                         velocitydistribution.MaxwellBoltzmannDistribution)
    thermalize(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    velocitydistribution.Stationary(atoms)
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    stamps = []
    now = {"wall": time.perf_counter, "cpu": time.process_time}[clock]
    dynamics.attach(lambda: stamps.append(now()), interval=1)
    dynamics.run(warmup + steps)
    # stamps[0] follows the first force call (before step 1); stamps[k] follows step k
    times = np.diff(np.asarray(stamps))[warmup:]
    return times.tolist(), {"final_temperature_K": float(atoms.get_temperature()),
                            "finite": bool(np.isfinite(atoms.positions).all())}


def predict(calculator, frames):
    """Energies (eV) and forces (eV/Å, concatenated over frames) of ``calculator`` on ``frames``."""
    energies, forces = [], []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calculator
        energies.append(float(atoms.get_potential_energy()))
        forces.append(np.asarray(atoms.get_forces(), dtype=float))
    return np.asarray(energies), np.concatenate(forces)


def write_json(path, data) -> None:
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


# --- MACE ----------------------------------------------------------------------------------

def _versions():
    from importlib.metadata import version

    import e3nn
    import torch

    return {"mace-torch": version("mace-torch"), "torch": torch.__version__, "e3nn": e3nn.__version__,
            "python": sys.version.split()[0]}


def _run_train_command(args, name: str, train_xyz: str, valid_xyz: str, extra, workdir=None):
    workdir = Path(workdir or args.workdir).resolve()
    return [sys.executable, "-m", "mace.cli.run_train", *json.loads(args.mace_args),
            "--name", name, "--work_dir", str(workdir),
            "--checkpoints_dir", str(workdir / "checkpoints"), "--model_dir", str(workdir),
            "--log_dir", str(workdir / "logs"), "--results_dir", str(workdir / "results"),
            "--train_file", str(Path(train_xyz).resolve()), "--valid_file", str(Path(valid_xyz).resolve()),
            "--energy_key", ENERGY_KEY, "--forces_key", FORCES_KEY, "--device", "cpu", "--save_cpu",
            "--eval_interval", "1", "--seed", str(args.seed), *extra]


def _environment(threads: int):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _stop(process) -> None:
    """SIGTERM the training run's process group (its own session), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _checkpoints(directory: Path):
    """``(epoch, path)`` of MACE's checkpoints in ``directory`` (stage one and, named ``_swa``, stage two:
    the epochs count on across the stages), oldest first."""
    found = []
    for path in directory.glob("*.pt"):
        match = CHECKPOINT_NAME.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def stage_one_name(path: Path) -> str:
    """The stage-one file name of a checkpoint: ``--restart_latest --max_num_epochs 0`` turns only a
    stage-one checkpoint into a model, and both stages hold the same kind of state."""
    return path.name.replace("_swa.pt", ".pt")


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), of its live descendants and of the
    children they have waited for, from the kernel's accounting in ``/proc`` (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        # after the command name: state, ppid, ..., utime (14th field), stime, cutime, cstime (17th)
        process = int(stat.parent.name)
        parents[process] = int(fields[1])
        times[process] = sum(int(value) for value in fields[11:15]) / tick
    total, stack = 0.0, [pid]
    while stack:
        process = stack.pop()
        total += times.get(process, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == process)
    return total


def _keep_safe_copy(workdir: Path, before_epoch: int) -> None:
    """Hard-link the newest checkpoint older than ``before_epoch`` (so complete: MACE logs
    epoch N before it saves it) into ``saved/``. MACE deletes its old checkpoint before writing
    the new one, so a stop in the middle of a save would otherwise leave nothing usable."""
    saved = workdir / "saved"
    saved.mkdir(exist_ok=True)
    complete = [item for item in _checkpoints(workdir / "checkpoints") if item[0] < before_epoch]
    if not complete:
        return
    epoch, path = complete[-1]
    target = saved / path.name
    if target.exists():
        return
    try:
        os.link(path, target)
    except OSError:
        return  # deleted meanwhile by MACE; an older copy stays
    for _, old in _checkpoints(saved):
        if old != target:
            old.unlink(missing_ok=True)


def _usable_checkpoint(workdir: Path, sources=("checkpoints", "saved")):
    """After the stop: the newest checkpoint in ``sources`` (folders of ``workdir``) that loads, left alone
    in ``checkpoints/`` under its stage-one name; ``(epoch, path, stage)`` or None."""
    import torch

    candidates = [item for source in sources for item in _checkpoints(workdir / source)]
    chosen = None
    for epoch, path in sorted(candidates, key=lambda item: -item[0]):
        try:
            torch.load(path, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:  # half-written at the stop
            print(f"_mace_worker: skipping unreadable checkpoint {path.name} ({type(exc).__name__})", file=sys.stderr)
            continue
        chosen = (epoch, path, 2 if path.name.endswith("_swa.pt") else 1)
        break
    (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    for _, path in _checkpoints(workdir / "checkpoints"):
        if chosen is None or path != chosen[1]:
            path.unlink()
    if chosen is not None:
        target = workdir / "checkpoints" / stage_one_name(chosen[1])
        if not target.exists():
            os.link(chosen[1], target)
        if chosen[1] != target and chosen[1].parent == target.parent:
            chosen[1].unlink()
        chosen = (chosen[0], target, chosen[2])
    return chosen


def _count_parameters(model_path: str) -> int:
    import torch

    model = torch.load(model_path, map_location="cpu", weights_only=False)
    return int(sum(p.numel() for p in model.parameters()))


def _finalize(args, name: str, train_xyz: str, valid_xyz: str, log, expect_epoch=None, workdir=None) -> Path:
    """Turn the latest checkpoint (or, with none, the initialised model) into ``name.model``:
    mace_run_train with ``--restart_latest --max_num_epochs 0`` loads it, trains nothing and
    saves the model the way a finished run does."""
    workdir = Path(workdir or args.workdir).resolve()
    (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    command = _run_train_command(args, name, train_xyz, valid_xyz,
                                 ["--restart_latest", "--max_num_epochs", "0", "--plot", "False"], workdir=workdir)
    with open(log, "a") as stream:
        stream.write("\n# " + " ".join(command) + "\n")
        stream.flush()
        done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=_environment(args.threads),
                              cwd=workdir)
    model = workdir / f"{name}.model"
    if done.returncode != 0 or not model.is_file():
        tail = "".join(Path(log).read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{tail}\nmace_run_train could not write {model} (exit {done.returncode}); see {log}")
    loaded = re.findall(r"Loaded Stage one model from epoch (\w+)", Path(log).read_text())
    if expect_epoch is not None and (not loaded or loaded[-1] != str(expect_epoch)):
        raise SystemExit(f"mace_run_train did not load the checkpoint of epoch {expect_epoch} "
                         f"(it says {loaded[-1] if loaded else 'nothing'}); see {log}")
    return model


def command_info(args) -> None:
    write_json(args.out, _versions())


class _Run:
    """One mace_run_train process, watched line by line: its log, its epochs, and the budget clock (wall
    time, or the CPU time of its process tree) started at its "Started training" line."""

    def __init__(self, command, log: Path, threads: int, clock: str, verbose: bool):
        self.clock, self.verbose = clock, verbose
        self.stream = open(log, "w")
        self.stream.write("# " + " ".join(command) + "\n")
        self.stream.flush()
        self.launched = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=_environment(threads), cwd=log.parent, start_new_session=True)
        self.started = None       # (wall, cpu) readings at "Started training"
        self.epochs = []          # one row per logged epoch
        self.stage_two = None     # clock readings when stage two began
        self.finished = False
        import queue
        import threading

        self.lines: "queue.Queue" = queue.Queue()

        def pump():  # a reader thread keeps the pipe drained
            for line in self.process.stdout:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def readings(self):
        """``(wall_s, cpu_s)`` since "Started training" (since the launch before it)."""
        wall, cpu = time.perf_counter(), process_tree_cpu_s(self.process.pid)
        wall0, cpu0 = self.started or (self.launched, 0.0)
        return wall - wall0, cpu - cpu0

    def elapsed_s(self) -> float:
        """Seconds on the budget clock since "Started training" (0 before it)."""
        if self.started is None:
            return 0.0
        if self.clock == "wall":  # no /proc scan needed
            return time.perf_counter() - self.started[0]
        return self.readings()[1]

    def next_line(self, timeout: float):
        """Read, log and parse one line (None on a timeout); sets ``finished`` at the end of the output."""
        import queue

        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            self.finished = True
            return None
        self.stream.write(line)
        self.stream.flush()
        if self.verbose and ECHO.search(line):
            sys.stdout.write("  [mace] " + line)
            sys.stdout.flush()
        if self.started is None and STARTED in line:
            self.started = (time.perf_counter(), process_tree_cpu_s(self.process.pid))
        if STAGE_TWO in line and self.stage_two is None:
            wall_s, cpu_s = self.readings()
            self.stage_two = {"epoch": len(self.epochs) + 1, "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2)}
        match = EPOCH_LINE.search(line)
        if match:
            wall_s, cpu_s = self.readings()
            self.epochs.append({"epoch": int(match.group(1)) + 1,  # MACE counts from 0, reported from 1
                                "val_energy_mae_meV_per_atom": float(match.group(2)),
                                "val_force_mae_meV_per_A": float(match.group(3)),
                                "time_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2)})
        return line

    def stop(self) -> None:
        _stop(self.process)
        self.stream.close()


def _probe_epoch_cpu_s(args, workdir: Path) -> dict:
    """CPU seconds of one training epoch (with its validation) of this MACE setup: a run of
    ``--probe-epochs`` epochs, timed from the end of its first epoch to the end of its last."""
    probe = workdir / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    probe.mkdir(parents=True)
    command = _run_train_command(args, "probe", args.train_xyz, args.valid_xyz,
                                 ["--max_num_epochs", str(args.probe_epochs), "--plot", "False"], workdir=probe)
    run = _Run(command, probe / "mace_probe.log", args.threads, "cpu", verbose=False)
    try:
        while not run.finished:
            run.next_line(1.0)
    finally:
        run.stop()
    if run.process.returncode != 0 or len(run.epochs) < 2:
        raise SystemExit(f"the stage-two probe of MACE failed (exit {run.process.returncode}, {len(run.epochs)} "
                         f"epochs); see {probe / 'mace_probe.log'}")
    first, last = run.epochs[0], run.epochs[-1]
    return {"epochs": len(run.epochs), "epoch_cpu_s": (last["cpu_s"] - first["cpu_s"]) / (len(run.epochs) - 1)}


def _take_snapshot(workdir: Path, minutes: float) -> Path:
    """Hard links of every checkpoint there is now (the newest one may still be being written: MACE
    finishes it, and a link keeps its data) in ``snapshots/<minutes>min/saved/``."""
    folder = workdir / "snapshots" / f"{minutes:g}min"
    saved = folder / "saved"
    saved.mkdir(parents=True, exist_ok=True)
    for source in ("checkpoints", "saved"):
        for _, path in _checkpoints(workdir / source):
            try:
                os.link(path, saved / path.name)
            except FileExistsError:
                continue
            except FileNotFoundError:  # deleted meanwhile by MACE; the copy in saved/ stays
                continue
    return folder


def command_train(args) -> None:
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "mace_train.log"
    marks = sorted(float(m) for m in args.snapshot_minutes.split(",")) if args.snapshot_minutes else []
    if marks and marks[-1] > args.budget_min:
        raise SystemExit(f"--snapshot-minutes {args.snapshot_minutes} goes beyond --budget-min {args.budget_min}")
    extra = ["--max_num_epochs", str(args.max_epochs), "--plot", "False"]
    stage_two = None
    if args.stage_two_fraction is not None:
        # MACE starts stage two at an epoch; the budget is in time: the epoch comes from a probe of the epoch cost.
        stage_two = _probe_epoch_cpu_s(args, workdir)
        clock_s_per_epoch = stage_two["epoch_cpu_s"]
        stage_two["start_epoch"] = max(1, int(round(args.stage_two_fraction * 60.0 * args.budget_min
                                                    / clock_s_per_epoch)))
        stage_two["fraction"] = args.stage_two_fraction
        extra += ["--swa", "--start_swa", str(stage_two["start_epoch"])]
    command = _run_train_command(args, "mace", args.train_xyz, args.valid_xyz, extra)
    budget_s = 60.0 * args.budget_min
    reason = "mace_run_train ended by itself"
    snapshots = []
    run = _Run(command, log, args.threads, args.clock, args.verbose)
    try:
        # MACE has no time budget: the clock starts at its "Started training" line (after data loading and
        # statistics, as mlmd's max_time_min does) and the run is stopped when the budget is spent.
        while not run.finished:
            elapsed = run.elapsed_s()
            while marks and run.started is not None and elapsed >= 60.0 * marks[0]:
                minutes = marks.pop(0)
                wall_s, cpu_s = run.readings()
                snapshots.append({"minutes": minutes, "folder": str(_take_snapshot(workdir, minutes)),
                                  "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2), "epochs": len(run.epochs),
                                  "stage": 2 if run.stage_two else 1})
            if run.started is not None and elapsed >= budget_s:
                reason = "budget spent (stopped with SIGTERM)"
                break
            line = run.next_line(POLL_S)
            match = EPOCH_LINE.search(line or "")
            if match:
                _keep_safe_copy(workdir, int(match.group(1)))
        stopped = time.perf_counter()
    finally:
        run.stop()
    if run.finished and run.process.returncode != 0:
        tail = "".join(Path(log).read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{tail}\nmace_run_train failed (exit {run.process.returncode}); see {log}")
    for item in snapshots:  # a mark passed: its newest checkpoint that loads becomes a model
        folder = Path(item["folder"])
        chosen = _usable_checkpoint(folder, sources=("saved",))
        if chosen is None:
            item["model"] = None
            continue
        model = _finalize(args, "mace", args.train_xyz, args.valid_xyz, folder / "mace_finalize.log",
                          expect_epoch=chosen[0], workdir=folder)
        item.update(model=str(model), best_epoch=chosen[0] + 1, checkpoint_stage=chosen[2])
    checkpoint = _usable_checkpoint(workdir)
    if checkpoint is None and not snapshots:
        raise SystemExit(f"MACE finished no epoch within {args.budget_min} min, so there is no checkpoint to "
                         f"evaluate; raise --mace-budget-min (log: {log})")
    # with snapshots, a budget too short for one epoch is a result: no model (each snapshot says so too)
    model = None if checkpoint is None else _finalize(args, "mace", args.train_xyz, args.valid_xyz, log,
                                                      expect_epoch=checkpoint[0])
    started = run.started[0] if run.started else None
    write_json(args.out, {
        **_versions(), "model": None if model is None else str(model), "log": str(log), "command": command,
        "clock": args.clock,
        "stop_reason": reason, "setup_s": round((started or stopped) - run.launched, 2),
        "train_s": round(stopped - started, 2) if started is not None else 0.0,
        # MACE counts epochs from 0; reported here from 1, as mlmd does
        "epochs": len(run.epochs), "best_epoch": None if checkpoint is None else checkpoint[0] + 1,
        "checkpoint_stage": None if checkpoint is None else checkpoint[2], "history": run.epochs,
        "stage_two": stage_two, "stage_two_began": run.stage_two, "snapshots": snapshots,
        "parameters": None if model is None else _count_parameters(str(model)),
    })


def command_model(args) -> None:
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "mace_model.log"
    log.write_text("")
    model = _finalize(args, "mace_untrained", args.train_xyz, args.valid_xyz or args.train_xyz, log)
    write_json(args.out, {"model": str(model), "parameters": _count_parameters(str(model))})


def _calculator(model: str, dtype: str):
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=model, device="cpu", default_dtype=dtype)


def command_predict(args) -> None:
    import torch
    from ase.io import read

    torch.set_num_threads(args.threads)
    frames = read(args.xyz, index=":")
    energies, forces = predict(_calculator(args.model, args.dtype), frames)
    np.savez(args.npz, energy=energies, forces=forces)
    write_json(args.out, {"frames": len(frames), "npz": args.npz})


def command_speed(args) -> None:
    import torch
    from ase.io import read

    torch.set_num_threads(args.threads)
    results = {}
    for case in args.case:
        label, rest = case.split("=", 1)
        model, structure = rest.split(",", 1)
        atoms = read(structure)
        times, info = md_step_times(atoms, _calculator(model, args.dtype), steps=args.steps, warmup=args.warmup,
                                    timestep_fs=args.timestep, seed=args.seed, clock=args.clock)
        results[label] = {"step_times_s": times, **info, "atoms": len(atoms)}
    write_json(args.out, {"threads": torch.get_num_threads(), "cases": results})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info")
    p.add_argument("--out", required=True)
    for name in ("train", "model"):
        p = sub.add_parser(name)
        p.add_argument("--workdir", required=True)
        p.add_argument("--train-xyz", required=True)
        p.add_argument("--valid-xyz", default=None)
        p.add_argument("--mace-args", required=True, help="JSON list of mace_run_train arguments")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--seed", type=int, default=0, help="training seed (also names MACE's checkpoints)")
        p.add_argument("--out", required=True)
        if name == "train":
            p.add_argument("--budget-min", type=float, required=True)
            p.add_argument("--max-epochs", type=int, default=100000)
            p.add_argument("--verbose", action="store_true")
            p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                           help="budget clock: wall time, or the CPU time (user + system) of MACE's process tree")
            p.add_argument("--snapshot-minutes", default="",
                           help="comma-separated marks on the clock: a model of the newest checkpoint at each")
            p.add_argument("--stage-two-fraction", type=float, default=None,
                           help="MACE's stage two (--swa) from this fraction of the budget on (epoch from a probe)")
            p.add_argument("--probe-epochs", type=int, default=3, help="epochs of the stage-two probe run")
    p = sub.add_parser("predict")
    p.add_argument("--model", required=True)
    p.add_argument("--xyz", required=True)
    p.add_argument("--npz", required=True)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--case", action="append", required=True, help="LABEL=MODEL,STRUCTURE.xyz (repeatable)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--timestep", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    {"info": command_info, "train": command_train, "model": command_model, "predict": command_predict,
     "speed": command_speed}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
