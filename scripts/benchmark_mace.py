"""Benchmark our ``equivariant`` model against MACE (mace-torch) on the same data and budget.

Both models are trained on the same train/validation frames for the same
wall-clock training budget on this machine (or ours is taken from an exported
model file with ``--our-model``), then evaluated the same way:

- energy MAE per atom and force MAE/RMSE on the same held-out test split
  (``mlmd.data.Dataset.split(validation=0.1, test=0.1, seed=--split-seed)``),
  computed by one function from each model's ASE-calculator predictions;
- ASE molecular dynamics speed (VelocityVerlet, median seconds per step after a
  warm-up, same starting velocities, same torch thread count) for a molecule of
  the dataset (ethanol: 9 atoms, open boundaries) and for a rattled 256-atom
  periodic fcc copper cell (4x4x4 cubic, a = 3.61 Å). The copper models are the
  same architectures built for species [29] and not trained (speed only). The
  speed runs alternate between the two models over ``--speed-rounds`` rounds.

MACE pins an older e3nn than mlmd, so it runs in its own virtual environment,
in subprocesses (``scripts/_mace_worker.py``), trained by its own
``mace_run_train``. Create that environment once (a few minutes)::

    python3 -m venv /work/mace-venv
    /work/mace-venv/bin/pip install mace-torch "torch>=2.4,<2.10"

Timings need an otherwise idle machine: when other jobs occupy the cores, torch's
intra-op thread pool (``--threads``, default 2) stalls erratically, by up to tens of
times for both models; the report records the load average and warns.

MACE has no wall-clock budget option: its clock starts at its "Started training"
log line (after data loading and statistics, like mlmd's ``max_time_min``), the
run is stopped with SIGTERM when the budget is spent (ours checks its budget
after each epoch, so it may run up to one epoch over), and its latest checkpoint
(MACE writes one whenever the validation loss improves, with the EMA weights)
is turned into a model by ``mace_run_train --restart_latest --max_num_epochs 0``.

Full benchmark with the shipped model (the budget and data default to those in
its metadata when it was made by ``scripts/train_pretrained.py``)::

    python scripts/benchmark_mace.py --our-model mlmd/pretrained_models/ethanol.pt \\
        --data pretrained-work/ethanol.xyz --json benchmark_mace.json

Training both here with a 30-minute budget each::

    python scripts/benchmark_mace.py --data ethanol.xyz --our-budget-min 30 --json benchmark_mace.json
"""

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from _mace_worker import ENERGY_KEY, FORCES_KEY, md_step_times, predict, write_json  # noqa: E402

WORKER = SCRIPTS / "_mace_worker.py"
DEFAULT_MACE_PYTHON = "/work/mace-venv/bin/python"
SETUP = ('python3 -m venv /work/mace-venv\n'
         '  /work/mace-venv/bin/pip install mace-torch "torch>=2.4,<2.10"')

# Ours: the hyperparameters of the shipped ethanol model (scripts/train_pretrained.py),
# without early stopping so that the whole budget is used, as MACE uses it.
OUR_MODEL = dict(family="equivariant", cutoff=5.0, channels=32, lmax=2, num_layers=2, num_basis=8,
                 radial_hidden=64)
OUR_TRAINING = dict(epochs=100000, lr=0.005, energy_weight=1.0, force_weight=10.0, ema_decay=0.99,
                    lr_factor=0.5, lr_patience=8, early_stopping_patience=None, dtype="float32", device="cpu")
OUR_BATCH_SIZE = 4


def mace_arguments(cutoff: float):
    """MACE hyperparameters of about our model's cost, the same loss weights, batch size and
    EMA as ours, float32 (``--mace-args`` appends overrides)."""
    return ["--model", "MACE", "--num_channels", "32", "--max_L", "1", "--max_ell", "3", "--correlation", "3",
            "--num_interactions", "2", "--r_max", f"{cutoff:g}", "--num_radial_basis", "8",
            "--num_cutoff_basis", "5", "--default_dtype", "float32", "--batch_size", str(OUR_BATCH_SIZE),
            "--valid_batch_size", "10", "--lr", "0.01", "--amsgrad", "--ema", "--ema_decay", "0.99",
            "--E0s", "average", "--loss", "weighted", "--energy_weight", "1.0", "--forces_weight", "10.0",
            "--error_table", "PerAtomMAE", "--scaling", "rms_forces_scaling", "--pin_memory", "False"]


def log(message: str) -> None:
    print(message, flush=True)


# --- the MACE subprocess -------------------------------------------------------------------

def worker(mace_python: str, command: str, *arguments: str, workdir: Path) -> dict:
    out = workdir / f"worker_{command}.json"
    out.unlink(missing_ok=True)
    done = subprocess.run([mace_python, "-W", "ignore::UserWarning", str(WORKER), command, *arguments,
                           "--out", str(out)])
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"the MACE worker failed ({command}, exit {done.returncode}); see the messages above")
    return json.loads(out.read_text())


def check_mace(mace_python: str, workdir: Path) -> dict:
    if not Path(mace_python).is_file():
        raise SystemExit(f"no MACE interpreter at {mace_python}. MACE needs its own virtual environment "
                         f"(it pins an older e3nn than mlmd); create it with\n  {SETUP}\n"
                         "or point --mace-python at the python of an existing one")
    out = workdir / "worker_info.json"
    done = subprocess.run([mace_python, str(WORKER), "info", "--out", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mace_python} cannot import mace-torch:\n{done.stderr.strip()[-2000:]}\n"
                         f"install it with\n  {SETUP}")
    return json.loads(out.read_text())


# --- data ---------------------------------------------------------------------------------

def plain_frame(atoms, labels=None):
    """A copy with only numbers, positions, cell and pbc, plus REF_ labels when given."""
    from ase import Atoms

    copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    if labels is not None:
        copy.info[ENERGY_KEY] = float(labels["energy"])
        copy.arrays[FORCES_KEY] = np.asarray(labels["forces"], dtype=float)
    return copy


def write_split(dataset, split, directory: Path):
    from ase.io import write

    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("train", "validation", "test"):
        indices = getattr(split, name)
        frames = [plain_frame(dataset.frames[i], dataset.labels[i]) for i in indices]
        paths[name] = directory / f"{name}.xyz"
        write(paths[name], frames, format="extxyz")
    return paths


def copper_cell(seed: int = 0, repeat: int = 4):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((repeat, repeat, repeat))
    atoms.rattle(stdev=0.05, seed=seed)
    return atoms


def labelled_copper(directory: Path):
    """Small rattled copper cells (32 atoms) labelled with EMT, as train (4) and validation (1)
    files: only for the statistics MACE's trainer needs to build an untrained copper model."""
    from ase.calculators.emt import EMT
    from ase.io import write

    frames = []
    for seed in range(1, 6):
        atoms = copper_cell(seed, repeat=2)
        atoms.calc = EMT()
        frames.append(plain_frame(atoms, {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}))
    write(directory / "cu_emt_train.xyz", frames[:4], format="extxyz")
    write(directory / "cu_emt_valid.xyz", frames[4:], format="extxyz")
    return directory / "cu_emt_train.xyz", directory / "cu_emt_valid.xyz"


def errors(energies, forces, frames, labels):
    """Energy MAE/RMSE per atom (meV/atom) and force MAE/RMSE (meV/Å, over components)."""
    n_atoms = np.array([len(atoms) for atoms in frames])
    de = (energies - np.array([float(lab["energy"]) for lab in labels])) / n_atoms
    df = forces - np.concatenate([lab["forces"] for lab in labels])
    return {"energy_mae_meV_per_atom": 1000 * float(np.abs(de).mean()),
            "energy_rmse_meV_per_atom": 1000 * float(np.sqrt((de ** 2).mean())),
            "force_mae_meV_per_A": 1000 * float(np.abs(df).mean()),
            "force_rmse_meV_per_A": 1000 * float(np.sqrt((df ** 2).mean()))}


# --- our side -------------------------------------------------------------------------------

def train_ours(args, data: Path, directory: Path, budget_min: float) -> dict:
    from mlmd.train import export_checkpoint, train

    model_section = {**OUR_MODEL, **json.loads(args.our_model_args or "{}")}
    config = {
        "data": {"path": str(data), "validation_fraction": 0.1, "test_fraction": 0.1, "seed": args.split_seed,
                 "batch_size": OUR_BATCH_SIZE},
        "model": model_section,
        "training": {**OUR_TRAINING, "seed": args.seed, "max_time_min": budget_min},
        "output": {"directory": str(directory / "training"), "learning_curve": False},
    }
    log("our config: " + json.dumps(config))
    shutil.rmtree(directory / "training", ignore_errors=True)
    result = train(config, progress=False)
    path = export_checkpoint(result.best_checkpoint, directory / "equivariant.pt", best=True, overwrite=True,
                             test_metrics=result.test_metrics, recipe={"config": config})
    train_s = sum(float(row["time_s"]) for row in result.history)
    return {"model": str(path), "config": config, "epochs": result.epoch, "best_epoch": result.best_epoch,
            "train_s": round(train_s, 2), "stopped_early": result.stopped_early,
            "trainer_test_metrics": result.test_metrics,
            "history": [{k: row[k] for k in ("epoch", "val_energy_mae_meV_per_atom", "val_force_mae_meV_per_A",
                                             "time_s") if k in row} for row in result.history]}


def our_copper_model(model, path: Path) -> str:
    """Our family with the given model's hyperparameters, built for species [29], untrained, exported."""
    import torch

    from mlmd.model import export_model
    from mlmd.train import build_model

    config = dict(model.metadata.get("config") or {})
    if not config:
        raise SystemExit(f"{model.path} has no hyperparameters in its metadata; cannot build a copper model")
    config.update(species=[29], atomic_energies_ref=None)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(model.dtype)
    try:
        module = build_model(model.family, config).to(model.dtype)
    finally:
        torch.set_default_dtype(previous)
    export_model(module, path)
    return str(path)


# --- reporting ---------------------------------------------------------------------------------

def ratio(a, b):
    return a / b if (b and math.isfinite(a) and math.isfinite(b)) else float("nan")


def table(report) -> str:
    ours, mace = report["ours"], report["mace"]
    rows = [("parameters", f"{ours['parameters']}", f"{mace['parameters']}", "")]
    rows.append(("training budget (min)", f"{report['budget_min']['ours']:g}", f"{report['budget_min']['mace']:g}", ""))
    rows.append(("epochs (best epoch)", f"{ours.get('epochs', '?')} ({ours.get('best_epoch', '?')})",
                 f"{mace['epochs']} ({mace['best_epoch']})", ""))
    rows.append(("training time (s)", "?" if ours.get("train_s") is None else f"{ours['train_s']:.0f}",
                 f"{mace['train_s']:.0f}", ""))
    for key, label in (("energy_mae_meV_per_atom", "test energy MAE (meV/atom)"),
                       ("force_mae_meV_per_A", "test force MAE (meV/Å)"),
                       ("force_rmse_meV_per_A", "test force RMSE (meV/Å)")):
        a, b = ours["test"][key], mace["test"][key]
        rows.append((label, f"{a:.2f}", f"{b:.2f}", f"{ratio(a, b):.2f}"))
    for case, label in report["speed"]["labels"].items():
        a, b = report["speed"]["ours"][case]["steps_per_s"], report["speed"]["mace"][case]["steps_per_s"]
        rows.append((f"MD steps/s, {label}", f"{a:.1f}", f"{b:.1f}", f"{ratio(a, b):.2f}"))
    header = ("", "ours (equivariant)", f"MACE {report['versions']['mace']['mace-torch']}", "ours/MACE")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [header] + rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--data", type=Path, help="extended XYZ with energy and forces (e.g. from `mlmd generate "
                        "ethanol`); default: the data named in --our-model's metadata")
    parser.add_argument("--our-model", type=Path, help="evaluate this exported model instead of training ours")
    parser.add_argument("--our-budget-min", type=float, default=None,
                        help="our wall-clock training budget (default: the one in --our-model's metadata, else 30)")
    parser.add_argument("--mace-budget-min", type=float, default=None, help="MACE's budget (default: ours)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the 80/10/10 split (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of both models")
    parser.add_argument("--mace-python", default=DEFAULT_MACE_PYTHON,
                        help=f"python of MACE's virtual environment (default {DEFAULT_MACE_PYTHON})")
    parser.add_argument("--mace-args", default="", help="extra mace_run_train arguments, appended (they win)")
    parser.add_argument("--our-model-args", default="", help='JSON overriding our [model] section, e.g. {"lmax": 1}')
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and MD (default 2)")
    parser.add_argument("--md-steps", type=int, default=50, help="timed MD steps per round (default 50)")
    parser.add_argument("--md-warmup", type=int, default=10, help="untimed MD steps first (default 10)")
    parser.add_argument("--speed-rounds", type=int, default=3, help="alternating timing rounds (default 3)")
    parser.add_argument("--workdir", type=Path, default=Path("benchmark-mace-work"))
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--quiet-mace", action="store_true", help="do not echo MACE's epoch lines")
    args = parser.parse_args(argv)

    import torch

    import mlmd
    from mlmd.data import load_dataset

    torch.set_num_threads(args.threads)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    versions = {"mace": check_mace(args.mace_python, workdir)}
    import e3nn

    versions["ours"] = {"mlmd": mlmd.__version__, "torch": torch.__version__, "e3nn": e3nn.__version__}
    log(f"MACE side: {json.dumps(versions['mace'])}\nour side: {json.dumps(versions['ours'])}")

    # --- our model (given) and the data --------------------------------------------------------
    given = None
    recipe = {}
    if args.our_model is not None:
        given = mlmd.load_model(args.our_model)
        recipe = (given.metadata.get("recipe") or {}).get("config") or {}
    data = args.data
    if data is None and recipe.get("data", {}).get("path"):
        data = Path(recipe["data"]["path"])
        log(f"data: {data} (from {args.our_model}'s metadata)")
    if data is None or not data.is_file():
        raise SystemExit(f"no dataset {data}: pass --data FILE.xyz (make one with `mlmd generate ethanol`)")
    budget = args.our_budget_min
    if budget is None:
        budget = float(recipe.get("training", {}).get("max_time_min") or 30.0)
    mace_budget = args.mace_budget_min if args.mace_budget_min is not None else budget
    log(f"training budgets: ours {budget:g} min{' (not trained here)' if given is not None else ''}, "
        f"MACE {mace_budget:g} min; {args.threads} torch threads")

    dataset = load_dataset(data)
    split = dataset.split(validation=0.1, test=0.1, seed=args.split_seed)
    log(f"data: {data}, {len(dataset)} frames; split seed {args.split_seed}: {len(split.train)} train, "
        f"{len(split.validation)} validation, {len(split.test)} test")
    if len(split.test) == 0 or len(split.validation) == 0:
        raise SystemExit("the dataset is too small for a 10 % validation and test split")
    notes = []
    if given is not None:
        if given.metadata.get("training_data_hash") not in ("", None, dataset.hash):
            notes.append(f"WARNING: {args.our_model} was trained on other data than {data} (hash differs); "
                         "its test split may overlap its training frames")
        rdata = recipe.get("data", {})
        if rdata and (rdata.get("seed", 0) != args.split_seed or rdata.get("test_fraction", 0.1) != 0.1
                      or rdata.get("validation_fraction", 0.1) != 0.1):
            notes.append(f"WARNING: {args.our_model} used another split ({rdata}) than this benchmark")
    for note in notes:
        log(note)
    paths = write_split(dataset, split, workdir / "data")
    molecule = plain_frame(dataset.frames[int(split.test[0])])
    copper = copper_cell(seed=0)
    test_frames = [dataset.frames[i] for i in split.test]
    test_labels = [dataset.labels[i] for i in split.test]

    # --- training -------------------------------------------------------------------------------
    if given is None:
        log(f"\n=== training ours for {budget:g} min ===")
        ours = train_ours(args, data, workdir / "ours", budget)
        our_model = mlmd.load_model(ours["model"])
    else:
        our_model = given
        training = given.metadata.get("training") or {}
        ours = {"model": str(args.our_model), "given": True, "best_epoch": training.get("epoch", "?"),
                "epochs": "?", "train_s": None, "config": recipe or None}
        log(f"\nours: {args.our_model} (not trained here), {our_model}")
    ours["parameters"] = int(sum(p.numel() for p in our_model.module.parameters()))
    ours["hyperparameters"] = our_model.metadata.get("config")

    mace_args = mace_arguments(our_model.cutoff) + shlex.split(args.mace_args)
    log(f"\n=== training MACE for {mace_budget:g} min ===\nmace_run_train {' '.join(mace_args)}")
    mace_dir = workdir / "mace"
    shutil.rmtree(mace_dir, ignore_errors=True)  # stale checkpoints would be picked up as the latest
    mace = worker(args.mace_python, "train", "--workdir", str(mace_dir), "--train-xyz", str(paths["train"]),
                  "--valid-xyz", str(paths["validation"]), "--mace-args", json.dumps(mace_args),
                  "--threads", str(args.threads), "--budget-min", str(mace_budget), "--seed", str(args.seed),
                  *([] if args.quiet_mace else ["--verbose"]), workdir=workdir)
    mace["arguments"] = mace_args
    log(f"MACE: {mace['epochs']} epochs in {mace['train_s']:.0f} s ({mace['stop_reason']}), "
        f"latest checkpoint from epoch {mace['best_epoch']}, model {mace['model']}")

    # --- test errors ------------------------------------------------------------------------------
    log("\n=== test-split errors ===")
    energies, forces = predict(mlmd.MLMDCalculator(our_model), test_frames)
    ours["test"] = errors(energies, forces, test_frames, test_labels)
    npz = workdir / "mace_test_predictions.npz"
    worker(args.mace_python, "predict", "--model", mace["model"], "--xyz", str(paths["test"]), "--npz", str(npz),
           "--threads", str(args.threads), workdir=workdir)
    with np.load(npz) as predicted:
        mace["test"] = errors(predicted["energy"], predicted["forces"], test_frames, test_labels)
    log(f"ours: {json.dumps(ours['test'])}\nMACE: {json.dumps(mace['test'])}")

    # --- MD speed -------------------------------------------------------------------------------
    from ase.io import write

    log("\n=== MD speed (ASE VelocityVerlet, 0.5 fs, 300 K) ===")
    structures = {"molecule": workdir / "data" / "md_molecule.xyz", "cu256": workdir / "data" / "md_cu256.xyz"}
    write(structures["molecule"], molecule, format="extxyz")
    write(structures["cu256"], copper, format="extxyz")
    labels = {"molecule": f"{molecule.get_chemical_formula(mode='hill')} ({len(molecule)} atoms, open)",
              "cu256": "Cu (256 atoms, periodic; untrained)"}
    cu_dir = workdir / "mace_cu"
    shutil.rmtree(cu_dir, ignore_errors=True)
    cu_train, cu_valid = labelled_copper(workdir / "data")
    mace_cu = worker(args.mace_python, "model", "--workdir", str(cu_dir), "--train-xyz", str(cu_train),
                     "--valid-xyz", str(cu_valid), "--mace-args", json.dumps(mace_args),
                     "--threads", str(args.threads), "--seed", str(args.seed), workdir=workdir)
    our_cu = mlmd.MLMDCalculator(our_copper_model(our_model, workdir / "ours_cu_untrained.pt"))
    our_calculators = {"molecule": mlmd.MLMDCalculator(our_model), "cu256": our_cu}
    mace_models = {"molecule": mace["model"], "cu256": mace_cu["model"]}
    atoms_of = {"molecule": molecule, "cu256": copper}
    times = {side: {case: [] for case in structures} for side in ("ours", "mace")}
    extra = {side: {} for side in ("ours", "mace")}
    timing = dict(steps=args.md_steps, warmup=args.md_warmup, timestep_fs=0.5, seed=args.seed)

    def run_ours():
        for case in structures:
            step_times, info = md_step_times(atoms_of[case], our_calculators[case], **timing)
            times["ours"][case].extend(step_times)
            extra["ours"][case] = info

    def run_mace():
        cases = [f"{case}={mace_models[case]},{structures[case]}" for case in structures]
        result = worker(args.mace_python, "speed", *[a for c in cases for a in ("--case", c)],
                        "--steps", str(args.md_steps), "--warmup", str(args.md_warmup), "--timestep", "0.5",
                        "--seed", str(args.seed), "--threads", str(args.threads), workdir=workdir)
        for case, value in result["cases"].items():
            times["mace"][case].extend(value["step_times_s"])
            extra["mace"][case] = {k: v for k, v in value.items() if k != "step_times_s"}

    load_before = os.getloadavg()[0]
    round_medians = {side: {case: [] for case in structures} for side in ("ours", "mace")}
    for round_ in range(args.speed_rounds):
        order = (run_ours, run_mace) if round_ % 2 == 0 else (run_mace, run_ours)
        for run in order:
            run()
        for side in ("ours", "mace"):
            for case in structures:
                round_medians[side][case].append(statistics.median(times[side][case][-args.md_steps:]))
        log(f"round {round_ + 1}/{args.speed_rounds}: " + ", ".join(
            f"{side} {case} {1 / round_medians[side][case][-1]:.1f}/s"
            for side in ("ours", "mace") for case in structures))
    load_after = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    speed = {"labels": labels, "threads": args.threads, **timing, "rounds": args.speed_rounds,
             "cpus": cpus, "load_average_before": load_before, "load_average_after": load_after}
    for side in ("ours", "mace"):
        speed[side] = {case: {"median_step_s": statistics.median(values), "steps_per_s": 1 / statistics.median(values),
                              "round_median_step_s": round_medians[side][case], "timed_steps": len(values),
                              **extra[side][case]} for case, values in times[side].items()}
    if max(load_before, load_after) + args.threads > cpus + 0.5:
        notes.append(f"WARNING: the machine was busy during the speed runs (load average {load_before:.1f} before, "
                     f"{load_after:.1f} after, on {cpus} CPUs, plus {args.threads} threads of ours): with "
                     "oversubscribed cores torch's thread pool can be slowed tens of times, erratically, "
                     "so these MD speeds are not reliable; rerun on an idle machine or with --threads 1")
    mace_cu_note = ("copper speed: untrained models of the same architectures with species [29] (ours: "
                    "hyperparameters of the evaluated model; MACE: mace_run_train with the same arguments and "
                    "--max_num_epochs 0 on a few EMT-labelled 32-atom cells); their weights do not affect the cost")

    report = {"data": str(data), "frames": len(dataset), "split_seed": args.split_seed,
              "split": {k: len(getattr(split, k)) for k in ("train", "validation", "test")},
              "budget_min": {"ours": budget, "mace": mace_budget}, "threads": args.threads,
              "versions": versions, "ours": ours, "mace": {**mace, "copper_model": mace_cu}, "speed": speed,
              "notes": notes + [mace_cu_note,
                                "errors: ours/MACE < 1 means ours is more accurate; speed: ours/MACE > 1 means "
                                "ours is faster"]}
    report["target"] = {
        "force_mae_at_least_as_good": ours["test"]["force_mae_meV_per_A"] <= mace["test"]["force_mae_meV_per_A"],
        "md_at_least_twice_as_fast": {case: speed["ours"][case]["steps_per_s"] >= 2 * speed["mace"][case]["steps_per_s"]
                                      for case in structures},
    }
    log("\n" + table(report))
    for note in report["notes"]:
        log("note: " + note)
    log(f"target (force MAE <= MACE, MD >= 2x MACE): {json.dumps(report['target'])}")
    if args.json:
        write_json(args.json, report)
        log(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
