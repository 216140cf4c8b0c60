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
    model   --workdir W ...                    a model of the same architecture, not trained (max_num_epochs 0)
    predict --model F --xyz TEST.xyz           energies and forces of every frame (written to --npz)
    speed   --model F --structure S.xyz ...    seconds per ASE VelocityVerlet step
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ENERGY_KEY = "REF_energy"
FORCES_KEY = "REF_forces"
STARTED = "Started training"
EPOCH_LINE = re.compile(r"Epoch (\d+):.*MAE_E_per_atom=\s*([-\d.eE+naif]+) meV, MAE_F=\s*([-\d.eE+naif]+)")
ECHO = re.compile(r"Started training|Initial:|Epoch \d+:|ERROR|Error|Traceback|Total number of parameters")
CHECKPOINT_NAME = re.compile(r"_epoch-(\d+)(_swa)?\.pt$")


# --- shared with benchmark_mace.py (no mace import) --------------------------------------

def md_step_times(atoms, calculator, steps: int = 50, warmup: int = 10, timestep_fs: float = 0.5,
                  temperature_K: float = 300.0, seed: int = 0):
    """Wall-clock seconds of each of ``steps`` ASE VelocityVerlet steps (after ``warmup``
    steps), one force call per step, velocities drawn at ``temperature_K`` with ``seed``."""
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
    dynamics.attach(lambda: stamps.append(time.perf_counter()), interval=1)
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


def _run_train_command(args, name: str, train_xyz: str, valid_xyz: str, extra):
    workdir = Path(args.workdir).resolve()
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
    """``(epoch, path)`` of MACE's (stage-one) checkpoints in ``directory``, oldest first."""
    found = []
    for path in directory.glob("*.pt"):
        match = CHECKPOINT_NAME.search(path.name)
        if match and not match.group(2):
            found.append((int(match.group(1)), path))
    return sorted(found)


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


def _usable_checkpoint(workdir: Path):
    """After the stop: the newest checkpoint that loads, left alone in ``checkpoints/``."""
    import torch

    candidates = _checkpoints(workdir / "checkpoints") + _checkpoints(workdir / "saved")
    chosen = None
    for epoch, path in sorted(candidates, key=lambda item: -item[0]):
        try:
            torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - a half-written file from the stop
            continue
        chosen = (epoch, path)
        break
    for _, path in _checkpoints(workdir / "checkpoints"):
        if chosen is None or path.name != chosen[1].name:
            path.unlink()
    if chosen is not None and not (workdir / "checkpoints" / chosen[1].name).exists():
        os.link(chosen[1], workdir / "checkpoints" / chosen[1].name)
    return chosen


def _count_parameters(model_path: str) -> int:
    import torch

    model = torch.load(model_path, map_location="cpu", weights_only=False)
    return int(sum(p.numel() for p in model.parameters()))


def _finalize(args, name: str, train_xyz: str, valid_xyz: str, log, expect_epoch=None) -> Path:
    """Turn the latest checkpoint (or, with none, the initialised model) into ``name.model``:
    mace_run_train with ``--restart_latest --max_num_epochs 0`` loads it, trains nothing and
    saves the model the way a finished run does."""
    workdir = Path(args.workdir).resolve()
    (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    command = _run_train_command(args, name, train_xyz, valid_xyz,
                                 ["--restart_latest", "--max_num_epochs", "0", "--plot", "False"])
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


def command_train(args) -> None:
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "mace_train.log"
    command = _run_train_command(args, "mace", args.train_xyz, args.valid_xyz,
                                 ["--max_num_epochs", str(args.max_epochs), "--plot", "False"])
    budget_s = 60.0 * args.budget_min
    launched = time.perf_counter()
    started = None
    epochs = []
    reason = "mace_run_train ended by itself"
    finished = False
    with open(log, "w") as stream:
        stream.write("# " + " ".join(command) + "\n")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=_environment(args.threads), cwd=workdir, start_new_session=True)
        try:
            # MACE has no wall-clock budget: the clock starts at its "Started training" line
            # (after data loading and statistics, as mlmd's max_time_min does) and the run is
            # stopped when the budget is spent. A reader thread keeps the pipe drained.
            import queue
            import threading

            lines: "queue.Queue" = queue.Queue()

            def pump():
                for line in process.stdout:
                    lines.put(line)
                lines.put(None)

            threading.Thread(target=pump, daemon=True).start()
            while not finished:
                now = time.perf_counter()
                if started is not None and now - started >= budget_s:
                    reason = "budget spent (stopped with SIGTERM)"
                    break
                timeout = 1.0 if started is None else max(0.01, min(1.0, budget_s - (now - started)))
                try:
                    line = lines.get(timeout=timeout)
                except queue.Empty:
                    continue
                if line is None:
                    finished = True
                    break
                stream.write(line)
                stream.flush()
                if args.verbose and ECHO.search(line):
                    sys.stdout.write("  [mace] " + line)
                    sys.stdout.flush()
                if started is None and STARTED in line:
                    started = time.perf_counter()
                match = EPOCH_LINE.search(line)
                if match:
                    _keep_safe_copy(workdir, int(match.group(1)))
                    epochs.append({"epoch": int(match.group(1)) + 1,
                                   "val_energy_mae_meV_per_atom": float(match.group(2)),
                                   "val_force_mae_meV_per_A": float(match.group(3)),
                                   "time_s": round(time.perf_counter() - (started or launched), 2)})
        finally:
            stopped = time.perf_counter()
            _stop(process)
    if finished and process.returncode != 0:
        tail = "".join(Path(log).read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{tail}\nmace_run_train failed (exit {process.returncode}); see {log}")
    checkpoint = _usable_checkpoint(workdir)
    if checkpoint is None:
        raise SystemExit(f"MACE finished no epoch within {args.budget_min} min, so there is no checkpoint to "
                         f"evaluate; raise --mace-budget-min (log: {log})")
    model = _finalize(args, "mace", args.train_xyz, args.valid_xyz, log, expect_epoch=checkpoint[0])
    write_json(args.out, {
        **_versions(), "model": str(model), "log": str(log), "command": command,
        "stop_reason": reason, "setup_s": round((started or stopped) - launched, 2),
        "train_s": round(stopped - started, 2) if started is not None else 0.0,
        # MACE counts epochs from 0; reported here from 1, as mlmd does
        "epochs": len(epochs), "best_epoch": checkpoint[0] + 1, "history": epochs,
        "parameters": _count_parameters(str(model)),
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
                                    timestep_fs=args.timestep, seed=args.seed)
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
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    {"info": command_info, "train": command_train, "model": command_model, "predict": command_predict,
     "speed": command_speed}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
