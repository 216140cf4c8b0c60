"""Compare the model families (equivariant, facet, spline, and MACE) on the same data and budget.

Two datasets, each split 80/10/10 with the same seed for every model
(``mlmd.data.Dataset.split``):

- ``ethanol``: GFN2-xTB (tblite) frames, by default the 1500 frames of
  ``scripts/train_pretrained.py`` (``--ethanol PATH`` reuses a file);
- ``copper``: EMT frames of ``mlmd generate cu`` (bulk, vacancy, surfaces,
  adatom; ``--copper PATH`` reuses a file).

Each family is trained by ``mlmd.train.train`` for at most ``--budget-min``
minutes of wall time (the spline fits in closed form and stops after one
epoch), on one torch thread by default; MACE (mace-torch, in its own venv, see
``scripts/benchmark_mace.py``) by ``mace_run_train`` for the same budget.
Reported per dataset and model: parameters, training wall time (sum of the
epochs, data loading excluded), test energy MAE (meV/atom) and force MAE/RMSE
(meV/Å), all from one function on ASE-calculator predictions.

Speed: ASE VelocityVerlet steps per second through each model's ASE
calculator (median step time after a warm-up; ``_mace_worker.md_step_times``
for every model) for ethanol (the ethanol models) and rattled fcc copper cells
of 256 and 2048 atoms (the copper models). The cases alternate between models
over ``--speed-rounds`` rounds, so background load hits all of them alike.

For the facet models it also reports the rotation error of the trained model
(max |F(Rx) - R F(x)| / max |F|, float32 and float64), which the sphere-grid
mixing layer makes non-zero.

Results are cached per dataset and model under ``--workdir``, so the script can
be run in parts (``--models facet``) and rerun to only print::

    python scripts/compare_families.py --ethanol pretrained-work/ethanol.xyz --budget-min 20 \\
        --mace-python /work/mace-venv/bin/python --json compare.json
"""

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

import benchmark_mace  # noqa: E402  (scripts/ is not a package)
from _mace_worker import md_step_times, predict  # noqa: E402

# Hyperparameters per (dataset, family). The equivariant one is the shipped ethanol model's; the facet one
# has the same width (32 channels, lmax 2); the spline's r_min sits below the shortest bond of the data.
MODELS = {
    "equivariant": {"family": "equivariant", "cutoff": 5.0, "channels": 32, "lmax": 2, "num_layers": 2,
                    "num_basis": 8, "radial_hidden": 64},
    "facet": {"family": "facet", "cutoff": 5.0, "channels": 32, "lmax": 2, "num_layers": 2,
              "tensor_product": "gaunt", "spline_intervals": 8, "mixing_hidden": 32},
    "spline": {"family": "spline", "cutoff": 5.5, "cutoff_3body": 3.5, "n_intervals": 20, "n_intervals_3body": 4},
}
DATASET_MODEL_OVERRIDES = {
    ("ethanol", "spline"): {"cutoff": 5.0, "r_min": 0.6, "r_min_3body": 0.6, "cutoff_3body": 3.0},
}
TRAINING = {"epochs": 2000, "lr": 0.005, "energy_weight": 1.0, "force_weight": 10.0, "ema_decay": 0.99,
            "lr_factor": 0.5, "lr_patience": 8, "early_stopping_patience": 40, "dtype": "float32",
            "device": "cpu", "seed": 0}
BATCH_SIZE = 4
SPLIT = {"validation_fraction": 0.1, "test_fraction": 0.1, "seed": 0}
DATA_RECIPES = {
    "ethanol": dict(system="ethanol", frames=1500, temperatures_K=[300.0, 450.0, 600.0], seed=1),
    "copper": dict(system="cu", frames=500, seed=1),
}
SPEED_CASES = {"ethanol": ("ethanol", None), "cu256": ("copper", 4), "cu2048": ("copper", 8)}


def log(message: str) -> None:
    print(message, flush=True)


def write_json(path: Path, data) -> None:
    from mlmd.io import atomic_write

    with atomic_write(path) as stream:
        stream.write(json.dumps(data, indent=1, default=float))


def dataset_file(name: str, given, workdir: Path) -> Path:
    if given:
        return Path(given)
    path = workdir / f"{name}.xyz"
    if not path.exists():
        from mlmd.generate import generate
        from mlmd.io import write_frames

        log(f"generating {name}: {DATA_RECIPES[name]}")
        write_frames(path, generate(**DATA_RECIPES[name], progress=False))
    return path


def speed_structure(case: str, workdir: Path, data: Path) -> Path:
    from ase.io import read, write

    path = workdir / f"{case}.xyz"
    if not path.exists():
        dataset, repeat = SPEED_CASES[case]
        atoms = read(data, index=0) if repeat is None else benchmark_mace.copper_cell(0, repeat)
        atoms = benchmark_mace.plain_frame(atoms)
        if repeat is None:
            atoms.center(vacuum=6.0)
        write(path, atoms, format="extxyz")
    return path


def test_frames(data: Path):
    from mlmd.data import Dataset

    dataset = Dataset.from_file(data)
    split = dataset.split(validation=SPLIT["validation_fraction"], test=SPLIT["test_fraction"], seed=SPLIT["seed"])
    return dataset, split


def train_ours(dataset_name: str, family: str, data: Path, directory: Path, budget_min: float, threads: int):
    from mlmd.train import export_checkpoint, train

    model = {**MODELS[family], **DATASET_MODEL_OVERRIDES.get((dataset_name, family), {})}
    config = {"data": {"path": str(data), **SPLIT, "batch_size": BATCH_SIZE}, "model": model,
              "training": {**TRAINING, "max_time_min": budget_min, "num_threads": threads},
              "output": {"directory": str(directory / "training"), "learning_curve": False}}
    shutil.rmtree(directory / "training", ignore_errors=True)
    log(f"[{dataset_name}/{family}] training for at most {budget_min:g} min: {json.dumps(model)}")
    result = train(config, progress=False, verbose=False)
    path = export_checkpoint(result.best_checkpoint, directory / f"{family}.pt", best=True, overwrite=True,
                             test_metrics=result.test_metrics, recipe={"config": config})
    return {"model": str(path), "epochs": result.epoch, "best_epoch": result.best_epoch,
            "train_s": sum(float(row["time_s"]) for row in result.history), "config": config}


def evaluate_ours(model_path: str, frames, labels) -> dict:
    import mlmd

    energies, forces = predict(mlmd.MLMDCalculator(model_path), frames)
    return benchmark_mace.errors(energies, forces, frames, labels)


def train_mace(args, dataset_name: str, data: Path, directory: Path):
    dataset, split = test_frames(data)
    paths = benchmark_mace.write_split(dataset, split, directory / "split")
    log(f"[{dataset_name}/mace] training for at most {args.budget_min:g} min")
    cutoff = MODELS["equivariant"]["cutoff"]
    result = benchmark_mace.worker(
        args.mace_python, "train", "--workdir", str(directory / "run"), "--train-xyz", str(paths["train"]),
        "--valid-xyz", str(paths["validation"]), "--mace-args", json.dumps(benchmark_mace.mace_arguments(cutoff)),
        "--threads", str(args.threads), "--budget-min", str(args.budget_min), workdir=directory)
    npz = directory / "test_predictions.npz"
    benchmark_mace.worker(args.mace_python, "predict", "--model", result["model"], "--xyz", str(paths["test"]),
                          "--npz", str(npz), "--threads", str(args.threads), workdir=directory)
    predictions = np.load(npz)
    frames = [dataset.frames[i] for i in split.test]
    labels = [dataset.labels[i] for i in split.test]
    return {"model": result["model"], "epochs": result.get("epochs"), "best_epoch": result.get("best_epoch"),
            "train_s": result.get("train_s"), "parameters": result.get("parameters"),
            "test": benchmark_mace.errors(predictions["energy"], predictions["forces"], frames, labels)}


def parameters_of(model_path: str) -> int:
    import mlmd

    return sum(p.numel() for p in mlmd.load_model(model_path).module.parameters())


def rotation_error(model_path: str, frames) -> dict:
    """max |F(Rx) - R F(x)| / max |F| over a few test frames and random rotations, float32 and float64."""
    import mlmd
    import torch

    model = mlmd.load_model(model_path)
    out = {}
    for dtype in (torch.float32, torch.float64):
        module = model.module.to(dtype)
        worst = 0.0
        for seed, atoms in enumerate(frames[:5]):
            q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
            rotation = q * np.sign(np.diag(r))

            def forces(positions, cell):
                result = module(torch.tensor(positions, dtype=dtype), torch.tensor(atoms.numbers),
                                torch.tensor(cell, dtype=dtype)[None], torch.tensor(atoms.pbc)[None],
                                torch.zeros(len(atoms), dtype=torch.int64))
                return result["forces"].double().numpy()

            reference = forces(atoms.positions, atoms.cell.array) @ rotation.T
            rotated = forces(atoms.positions @ rotation.T, atoms.cell.array @ rotation.T)
            worst = max(worst, float(np.abs(rotated - reference).max() / np.abs(reference).max()))
        out[str(dtype).replace("torch.", "")] = worst
    model.module.to(model.dtype)
    return out


def speeds(args, results, structures) -> dict:
    """ASE MD steps/s per (case, model), alternating models within each round."""
    import torch

    import mlmd

    torch.set_num_threads(args.threads)
    times = {}
    for round_index in range(args.speed_rounds):
        for case, (dataset_name, repeat) in SPEED_CASES.items():
            if case not in args.speed_cases:
                continue
            from ase.io import read

            atoms = read(structures[case])
            steps = args.speed_steps if repeat != 8 else max(2, args.speed_steps // 8)
            for name, result in results[dataset_name].items():
                if name == "mace":
                    out = benchmark_mace.worker(args.mace_python, "speed", "--case",
                                                f"{case}={result['model']},{structures[case]}", "--steps", str(steps),
                                                "--warmup", "2", "--threads", str(args.threads),
                                                workdir=Path(args.workdir))
                    step_times = out["cases"][case]["step_times_s"]
                else:
                    step_times, _ = md_step_times(atoms, mlmd.MLMDCalculator(result["model"]), steps=steps, warmup=2)
                times.setdefault(case, {}).setdefault(name, []).extend(step_times)
                log(f"  round {round_index + 1} {case:8s} {name:12s} {statistics.median(step_times) * 1e3:9.2f} ms/step")
    return {case: {name: {"median_step_s": statistics.median(t), "steps_per_s": 1.0 / statistics.median(t),
                          "samples": len(t)} for name, t in per_model.items()} for case, per_model in times.items()}


def table(report) -> str:
    lines = []
    for dataset_name, per_model in report["results"].items():
        names = list(per_model)
        rows = [["", *names]]
        rows.append(["parameters", *[str(per_model[n].get("parameters", "?")) for n in names]])
        rows.append(["training time (s)", *[f"{per_model[n]['train_s']:.0f}" if per_model[n].get("train_s") is not None
                                            else "?" for n in names]])
        rows.append(["epochs (best)", *[f"{per_model[n].get('epochs')} ({per_model[n].get('best_epoch')})"
                                        for n in names]])
        for key, label in (("energy_mae_meV_per_atom", "test E MAE (meV/atom)"),
                           ("force_mae_meV_per_A", "test F MAE (meV/Å)"),
                           ("force_rmse_meV_per_A", "test F RMSE (meV/Å)")):
            rows.append([label, *[f"{per_model[n]['test'][key]:.2f}" for n in names]])
        for case, (case_dataset, _) in SPEED_CASES.items():
            if case_dataset == dataset_name and case in report.get("speed", {}):
                rows.append([f"MD steps/s {case}", *[f"{report['speed'][case][n]['steps_per_s']:.2f}"
                                                     if n in report["speed"][case] else "-" for n in names]])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append(f"== {dataset_name}")
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--ethanol", help="ethanol extended XYZ (default: generate the pretrained model's data)")
    parser.add_argument("--copper", help="copper extended XYZ (default: mlmd generate cu, 500 frames, seed 1)")
    parser.add_argument("--datasets", default="ethanol,copper")
    parser.add_argument("--models", default="equivariant,facet,spline",
                        help="comma list of equivariant, facet, spline, mace")
    parser.add_argument("--budget-min", type=float, default=20.0, help="training wall-clock budget per model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and MD")
    parser.add_argument("--mace-python", default="/work/mace-venv/bin/python")
    parser.add_argument("--workdir", default="compare-work")
    parser.add_argument("--retrain", action="store_true", help="ignore cached results")
    parser.add_argument("--speed-cases", default="ethanol,cu256,cu2048")
    parser.add_argument("--speed-steps", type=int, default=40)
    parser.add_argument("--speed-rounds", type=int, default=3)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--json", default=None, help="write the report here")
    args = parser.parse_args(argv)
    args.speed_cases = args.speed_cases.split(",")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    if "mace" in args.models.split(","):
        benchmark_mace.check_mace(args.mace_python, workdir)

    report = {"budget_min": args.budget_min, "threads": args.threads, "load_average_start": os.getloadavg(),
              "results": {}}
    data_paths = {}
    for dataset_name in args.datasets.split(","):
        data = dataset_file(dataset_name, getattr(args, dataset_name), workdir)
        data_paths[dataset_name] = data
        dataset, split = test_frames(data)
        frames = [dataset.frames[i] for i in split.test]
        labels = [dataset.labels[i] for i in split.test]
        for name in args.models.split(","):
            directory = workdir / dataset_name / name
            cache = directory / "result.json"
            if cache.exists() and not args.retrain:
                result = json.loads(cache.read_text())
            else:
                directory.mkdir(parents=True, exist_ok=True)
                if name == "mace":
                    result = train_mace(args, dataset_name, data, directory)
                else:
                    result = train_ours(dataset_name, name, data, directory, args.budget_min, args.threads)
                    result["test"] = evaluate_ours(result["model"], frames, labels)
                    result["parameters"] = parameters_of(result["model"])
                    if name == "facet":
                        result["rotation_error"] = rotation_error(result["model"], frames)
                write_json(cache, result)
            log(f"[{dataset_name}/{name}] test F MAE {result['test']['force_mae_meV_per_A']:.2f} meV/Å, "
                f"training {result.get('train_s') or float('nan'):.0f} s")
            report["results"].setdefault(dataset_name, {})[name] = result
    if not args.no_speed:
        structures = {case: speed_structure(case, workdir, data_paths[dataset_name])
                      for case, (dataset_name, _) in SPEED_CASES.items()
                      if case in args.speed_cases and dataset_name in data_paths}
        args.speed_cases = [c for c in args.speed_cases if c in structures]
        report["speed"] = speeds(args, report["results"], structures)
    report["load_average_end"] = os.getloadavg()
    print(table(report))
    if args.json:
        write_json(Path(args.json), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
