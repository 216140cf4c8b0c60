"""Accuracy against training cost: test force and energy errors of every potential family and of MACE after
5, 20 and 60 CPU-minutes of training, on four datasets.

Cost is the CPU time of the training process on one thread (user + system, the kernel's accounting: mlmd's
``training.budget_clock = "cpu"``, MACE's process tree read from ``/proc``), so that other work on a shared
machine does not bias the comparison; wall time is recorded too. Each model is trained once per dataset and
its snapshots are evaluated at every budget: mlmd writes ``snapshot-<M>min.pt`` when its CPU clock passes each
mark (``training.snapshot_minutes``: the best EMA weights so far, what a run with that budget would keep); for
MACE the newest checkpoint at each mark (MACE keeps its best EMA weights) is turned into a model. Both clocks
start after data loading and statistics (mlmd: before its first epoch; MACE: at "Started training"). A
snapshot's cost is the CPU time spent when it was taken; mlmd ends its epoch at the mark and validates, while
MACE saves weights at the end of an epoch only, so its snapshot holds those of its last finished epoch (the
JSON gives their own cost too, ``weights_cpu_min``): with epochs of minutes (MACE on the metals) that matters.

Datasets, made once with ``python -m mlmd generate`` (fixed seeds) and split 80/10/10 with split seed 0 for
every model (``mlmd.data.Dataset.split``, the split of the trainer and of ``scripts/benchmark_mace.py``):

- ``ethanol``: 1500 GFN2-xTB frames, MD at 300/450/600 K plus displacements (the shipped model's data);
- ``copper``: 500 EMT frames of bulk, vacancy, (100)/(111) surfaces and an adatom;
- ``glycine``: 1500 GFN2-xTB frames of neutral glycine, MD at 300/450/600 K plus displacements;
- ``cuau``: 1000 EMT frames of a Cu-Au alloy (ordered Cu3Au, disordered Cu3Au and CuAu, a vacancy, a (111)
  surface; ``mlmd generate cuau``).

Models: every registered potential family (``potentials.FAMILIES``, the forecaster excluded: it is no
potential), plus ``VARIANTS`` (the transformer trained plainly and with rotation augmentation only, the
baselines of its learned symmetry; facet with the density-product mixing), with the project's recommended hyperparameters and recipe (``scripts/compare_families.py``:
``MODELS``, ``TRAINING``, its spline overrides for molecules; a family not listed there gets its constructor's
defaults), without early stopping so that the budget is used; ``--training-json`` overrides [training] keys
of every mlmd run (e.g. a stage-two recipe). MACE (mace-torch, in its own venv, trained by ``mace_run_train``
through ``scripts/_mace_worker.py``) with its own recommended recipe: AMSGrad, lr 0.01, EMA 0.99, batch 10,
loss weights E 1 / F 100, and stage two (``--swa``: E 1000 / F 100, lr 1e-3) for the last 20 % of its
longest budget (the start epoch comes from a short probe of its epoch cost, outside the budget); its size is
that of ``scripts/benchmark_mace.py`` (32 channels, L = 1, correlation 3, 2 layers, float32, cutoff 5 Å),
about our models' cost; ``--mace-args`` appends overrides. Without MACE's venv the script skips MACE and
says so::

    python3 -m venv /work/mace-venv && /work/mace-venv/bin/pip install mace-torch "torch>=2.4,<2.10"

Budgets: ``--budgets`` (default 5 and 20 CPU-minutes) for every model and dataset; ``--long-budget`` (60) for
MACE and for the best mlmd family (lowest validation force MAE at the last of ``--budgets``) on the molecules;
that family is trained again from the start with the extra mark, and its curve is that run's. ``--jobs``
trainings run at a time (default 2), each on one thread. Every model is evaluated by one function on the
same test frames: energies and forces of its ASE calculator (``_mace_worker.predict``; MACE's in its venv),
errors by ``benchmark_mace.errors``.

Writes ``OUT/benchmark_accuracy.json`` (per model, dataset and budget: test force MAE/RMSE in meV/Å, energy
MAE in meV/atom, CPU-minutes and wall-minutes of training, epochs), ``OUT/benchmark_accuracy.png`` (test
force MAE against CPU-minutes, one panel per dataset, one curve per model) and prints a table. ``--resume``
skips the trainings that finished (their ``result.json``); unfinished ones start again.

The full benchmark (about 8 CPU-hours with three families: some 4-5 hours on two idle cores)::

    OMP_NUM_THREADS=1 python scripts/benchmark_accuracy.py --out accuracy-work --jobs 2 \\
        --mace-python /work/mace-venv/bin/python

A check of the machinery in a few minutes::

    OMP_NUM_THREADS=1 python scripts/benchmark_accuracy.py --out /tmp/accuracy-tiny --budgets 0.1,0.2 \\
        --long-budget 0.3 --frames 40 --datasets ethanol,cuau --families facet,spline,mace
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
import benchmark_mace  # noqa: E402  (scripts/ is not a package)
import compare_families  # noqa: E402
from _mace_worker import predict  # noqa: E402

MACE = "mace"
SPLIT_SEED = 0
TRAINING_SEED = 0

# name -> `mlmd generate` recipe and whether it is a free molecule (the spline family's molecule overrides).
DATASETS = {
    "ethanol": {**compare_families.DATA_RECIPES["ethanol"], "molecule": True},
    "copper": {**compare_families.DATA_RECIPES["copper"], "molecule": False},
    "glycine": {"system": "glycine", "frames": 1500, "temperatures_K": [300.0, 450.0, 600.0], "seed": 1,
                "molecule": True},
    "cuau": {"system": "cuau", "frames": 1000, "seed": 1, "molecule": False},
}
# Hyperparameters for molecules, where bonds are shorter than the family defaults assume.
MOLECULE_OVERRIDES = {"spline": compare_families.DATASET_MODEL_OVERRIDES[("ethanol", "spline")]}

# MACE's own recipe (mace_run_train's defaults and README: batch 10, E 1 / F 100, stage two E 1000 / F 100 at
# lr 1e-3 for the last ~20 % of training), appended to benchmark_mace's architecture of about our models' cost.
MACE_RECIPE = ["--batch_size", "10", "--valid_batch_size", "10", "--lr", "0.01", "--energy_weight", "1.0",
               "--forces_weight", "100.0", "--swa_energy_weight", "1000.0", "--swa_forces_weight", "100.0",
               "--swa_lr", "0.001"]
MACE_STAGE_TWO_FRACTION = 0.8
MACE_CUTOFF = 5.0


def log(message: str) -> None:
    print(message, flush=True)


def write_json(path: Path, data) -> None:
    from mlmd.io import atomic_write

    with atomic_write(path) as stream:
        stream.write(json.dumps(data, indent=1, default=float))


# --- models -------------------------------------------------------------------------------------

# Model variants benchmarked beside the families: name -> (family, [training] keys, [model] keys). The
# transformer family (symmetry learned, the default "learned" objective) is judged against the same network
# trained plainly and with rotation augmentation only (issue 19's baselines); facet-product is facet with the
# density-product mixing (correlation 3) instead of the grid MLP.
VARIANTS = {"transformer-plain": ("transformer", {"symmetry": "plain"}, {}),
            "transformer-augment": ("transformer", {"symmetry": "augment"}, {}),
            "facet-product": ("facet", {}, {"mixing": "product", "mixing_correlation": 3})}


def potential_families():
    """Every registered family that is a potential (the model contract of energies and forces), then the
    :data:`VARIANTS` of those families."""
    import potentials
    from potentials.base import Potential

    families = [name for name, cls in potentials.FAMILIES.items() if issubclass(cls, Potential)]
    return families + [name for name, (family, _, _) in VARIANTS.items() if family in families]


def model_section(family: str, dataset: str) -> dict:
    """The recommended [model] section of ``family`` for ``dataset`` (constructor defaults when unlisted)."""
    section = dict(compare_families.MODELS.get(family, {"family": family}))
    if DATASETS[dataset]["molecule"]:
        section.update(MOLECULE_OVERRIDES.get(family, {}))
    return section


def mlmd_config(family: str, dataset: str, data: Path, directory: Path, marks, overrides: dict) -> dict:
    """A training config: the recommended recipe, no early stopping, the CPU clock, a snapshot at every mark.
    ``family`` may name one of :data:`VARIANTS`."""
    family, variant_keys, model_keys = VARIANTS.get(family, (family, {}, {}))
    training = {**compare_families.TRAINING, "epochs": 1_000_000, "early_stopping_patience": None,
                "seed": TRAINING_SEED, "num_threads": 1, "budget_clock": "cpu", "max_time_min": max(marks),
                "snapshot_minutes": list(marks), **variant_keys, **overrides}
    return {"data": {"path": str(data), "validation_fraction": 0.1, "test_fraction": 0.1, "seed": SPLIT_SEED,
                     "batch_size": compare_families.BATCH_SIZE},
            "model": {**model_section(family, dataset), **model_keys}, "training": training,
            "output": {"directory": str(directory / "training"), "learning_curve": False}}


def merge_arguments(arguments: list, updates: list) -> list:
    """``arguments`` with each ``--flag [value]`` of ``updates`` replacing the same flag's value (or appended)."""
    merged = list(arguments)
    k = 0
    while k < len(updates):
        flag = updates[k]
        has_value = k + 1 < len(updates) and not updates[k + 1].startswith("--")
        value = [updates[k + 1]] if has_value else []
        if flag in merged:
            at = merged.index(flag)
            old_has_value = at + 1 < len(merged) and not merged[at + 1].startswith("--")
            merged[at:at + 1 + old_has_value] = [flag, *value]
        else:
            merged += [flag, *value]
        k += 1 + has_value
    return merged


def mace_arguments(extra: str) -> list:
    """benchmark_mace's architecture, MACE's recipe, then ``--mace-args``; a later value of a flag wins."""
    import shlex

    return merge_arguments(merge_arguments(benchmark_mace.mace_arguments(MACE_CUTOFF), MACE_RECIPE),
                           shlex.split(extra))


# --- data -----------------------------------------------------------------------------------------

def make_dataset(name: str, out: Path, frames) -> Path:
    """``OUT/data/NAME.xyz`` from ``python -m mlmd generate`` (made once; ``frames`` overrides the size)."""
    recipe = DATASETS[name]
    count = frames or recipe["frames"]
    path = out / "data" / f"{name}-{count}.xyz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlmd", "generate", recipe["system"], "--frames", str(count),
               "--seed", str(recipe["seed"]), "-o", str(path), "--quiet"]
    if "temperatures_K" in recipe:
        command += ["--temperatures", ",".join(f"{t:g}" for t in recipe["temperatures_K"])]
    log(f"generating {name}: {' '.join(command[1:])}")
    done = subprocess.run(command, env=one_thread_environment())
    if done.returncode != 0 or not path.exists():
        raise SystemExit(f"`mlmd generate {recipe['system']}` failed (exit {done.returncode}); see above")
    return path


def test_set(data: Path):
    """The test frames and their labels (the split every model shares)."""
    from mlmd.data import load_dataset

    dataset = load_dataset(data)
    split = dataset.split(validation=0.1, test=0.1, seed=SPLIT_SEED)
    return dataset, split, [dataset.frames[i] for i in split.test], [dataset.labels[i] for i in split.test]


def test_errors(energies, forces, frames, labels) -> dict:
    """The one evaluation of every model: errors of its ASE-calculator predictions on the test frames."""
    return benchmark_mace.errors(np.asarray(energies), np.asarray(forces), frames, labels)


# --- one training (run in its own process: ``--job SPEC.json``) -------------------------------------

def run_mlmd_job(spec: dict) -> dict:
    import torch

    import mlmd
    from mlmd.train import export_checkpoint, load_checkpoint, train
    from mlmd.training.checkpoint import snapshot_file

    torch.set_num_threads(1)
    directory = Path(spec["directory"])
    training = Path(spec["config"]["output"]["directory"])
    shutil.rmtree(training, ignore_errors=True)
    log(f"config: {json.dumps(spec['config'])}")
    result = train(spec["config"], progress=False)
    _, _, frames, labels = test_set(Path(spec["data"]))
    snapshots, missing = [], []
    for minutes in spec["marks"]:
        path = training / snapshot_file(minutes)
        if not path.exists():  # not expected (the budget ends at the last mark), but reported, not hidden
            missing.append(minutes)
            continue
        checkpoint = load_checkpoint(path)
        clocks = checkpoint["snapshot"]
        model = export_checkpoint(path, directory / f"model-{minutes:g}min.pt", overwrite=True)
        calculator = mlmd.MLMDCalculator(model)
        snapshots.append({
            "minutes": minutes, "cpu_min": clocks["cpu_s"] / 60.0, "wall_min": clocks["wall_s"] / 60.0,
            "epochs": clocks["epochs"], "best_epoch": checkpoint["epoch"],
            "validation_force_mae_meV_per_A": checkpoint["metrics"].get("val_force_mae_meV_per_A"),
            "test": test_errors(*predict(calculator, frames), frames, labels), "model": str(model)})
        log(f"{minutes:g} min: {json.dumps(snapshots[-1])}")
    parameters = sum(p.numel() for p in result.ema_model.parameters())
    return {"snapshots": snapshots, "missing": missing, "parameters": int(parameters),
            "stop_reason": result.stop_reason, "epochs": result.epoch}


def run_mace_job(spec: dict) -> dict:
    mace = spec["mace"]
    directory = Path(spec["directory"])
    _, _, frames, labels = test_set(Path(spec["data"]))
    run = directory / "run"
    shutil.rmtree(run, ignore_errors=True)
    trained = benchmark_mace.worker(
        mace["python"], "train", "--workdir", str(run), "--train-xyz", mace["train_xyz"], "--valid-xyz",
        mace["valid_xyz"], "--mace-args", json.dumps(mace["args"]), "--threads", "1", "--budget-min",
        str(max(spec["marks"])), "--seed", str(TRAINING_SEED), "--clock", "cpu", "--snapshot-minutes",
        ",".join(f"{m:g}" for m in spec["marks"]), "--stage-two-fraction", str(mace["stage_two_fraction"]),
        "--verbose", workdir=directory)
    snapshots, missing = [], []
    for item in trained["snapshots"]:
        if item.get("model") is None:
            log(f"MACE had no checkpoint yet at {item['minutes']:g} min (no epoch finished)")
            missing.append(item["minutes"])
            continue
        npz = directory / f"test-{item['minutes']:g}min.npz"
        benchmark_mace.worker(mace["python"], "predict", "--model", item["model"], "--xyz", mace["test_xyz"],
                              "--npz", str(npz), "--threads", "1", workdir=directory)
        with np.load(npz) as predicted:
            test = test_errors(predicted["energy"], predicted["forces"], frames, labels)
        row = {row["epoch"]: row for row in trained["history"]}.get(item["best_epoch"], {})
        snapshots.append({
            "minutes": item["minutes"], "cpu_min": item["cpu_s"] / 60.0, "wall_min": item["wall_s"] / 60.0,
            "epochs": item["epochs"], "best_epoch": item["best_epoch"], "stage": item["checkpoint_stage"],
            # MACE keeps weights at the end of an epoch only: the CPU time when these were validated
            "weights_cpu_min": row["cpu_s"] / 60.0 if "cpu_s" in row else None,
            "validation_force_mae_meV_per_A": row.get("val_force_mae_meV_per_A"),
            "test": test, "model": item["model"]})
        log(f"{item['minutes']:g} min: {json.dumps(snapshots[-1])}")
    return {"snapshots": snapshots, "missing": missing, "parameters": trained["parameters"],
            "epochs": trained["epochs"],
            "stop_reason": trained["stop_reason"], "stage_two": trained["stage_two"],
            "stage_two_began": trained["stage_two_began"], "mace_versions": {
                k: trained[k] for k in ("mace-torch", "torch", "e3nn")}}


def run_job(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    started = time.perf_counter()
    result = run_mace_job(spec) if spec["kind"] == MACE else run_mlmd_job(spec)
    result.update(spec=spec, job_wall_min=(time.perf_counter() - started) / 60.0)
    write_json(Path(spec["directory"]) / "result.json", result)
    return 0


# --- running the trainings ------------------------------------------------------------------------

def one_thread_environment() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def run_jobs(jobs, parallel: int, on_done) -> None:
    """Run ``jobs`` (specs), ``parallel`` at a time, each as ``--job`` in its own one-thread process, longest
    budget first; ``on_done(spec, ok)`` may return further jobs. A job whose ``result.json`` holds the same
    spec is skipped."""
    pending, running = list(jobs), {}
    while pending or running:
        pending.sort(key=lambda spec: -max(spec["marks"]))
        while pending and len(running) < parallel:
            spec = pending.pop(0)
            directory = Path(spec["directory"])
            before = load_result(spec)
            if before is not None and before["spec"] == spec:
                log(f"[{spec['name']}] finished before; skipped")
                pending.extend(on_done(spec, True))
                continue
            if before is not None:
                log(f"[{spec['name']}] finished before with other settings; trained again")
            shutil.rmtree(directory, ignore_errors=True)  # an unfinished run starts again
            directory.mkdir(parents=True)
            write_json(directory / "spec.json", spec)
            stream = open(directory / "job.log", "w")
            process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--job",
                                        str(directory / "spec.json")], stdout=stream, stderr=subprocess.STDOUT,
                                       env=one_thread_environment())
            running[spec["name"]] = (spec, process, stream)
            log(f"[{spec['name']}] training for {max(spec['marks']):g} CPU-min, snapshots at "
                f"{', '.join(f'{m:g}' for m in spec['marks'])} (log: {directory / 'job.log'})")
        time.sleep(1.0)
        for name, (spec, process, stream) in list(running.items()):
            if process.poll() is None:
                continue
            stream.close()
            del running[name]
            ok = process.returncode == 0 and (Path(spec["directory"]) / "result.json").exists()
            log(f"[{name}] done" if ok else
                f"[{name}] FAILED (exit {process.returncode}); see {spec['directory']}/job.log")
            pending.extend(on_done(spec, ok))


def load_result(spec: dict):
    path = Path(spec["directory"]) / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


# --- the report -----------------------------------------------------------------------------------

def report_rows(runs) -> list:
    """One row per (model, dataset, budget) of the runs that count."""
    rows = []
    for run in runs:
        spec = run["spec"]
        for snapshot in run["snapshots"]:
            test = snapshot["test"]
            rows.append({"model": spec["model"], "dataset": spec["dataset"], "budget_min": snapshot["minutes"],
                         "force_mae_meV_per_A": test["force_mae_meV_per_A"],
                         "force_rmse_meV_per_A": test["force_rmse_meV_per_A"],
                         "energy_mae_meV_per_atom": test["energy_mae_meV_per_atom"],
                         "cpu_min": snapshot["cpu_min"], "wall_min": snapshot["wall_min"],
                         "epochs": snapshot["epochs"], "best_epoch": snapshot["best_epoch"],
                         "stage": snapshot.get("stage"), "weights_cpu_min": snapshot.get("weights_cpu_min"),
                         "parameters": run["parameters"], "run": spec["directory"]})
    return rows


def against_mace(rows) -> list:
    """Per dataset and budget with a MACE result: the mlmd family of lowest test force MAE and its force and
    energy MAE over MACE's (the issue's targets: force ratio <= 0.9, energy ratio <= 1)."""
    found = []
    for (dataset, budget) in sorted({(row["dataset"], row["budget_min"]) for row in rows}):
        here = [row for row in rows if row["dataset"] == dataset and row["budget_min"] == budget]
        mace = [row for row in here if row["model"] == MACE]
        ours = [row for row in here if row["model"] != MACE]
        if not mace or not ours:
            continue
        best = min(ours, key=lambda row: row["force_mae_meV_per_A"])
        found.append({"dataset": dataset, "budget_min": budget, "best_family": best["model"],
                      "force_mae_ratio": best["force_mae_meV_per_A"] / mace[0]["force_mae_meV_per_A"],
                      "energy_mae_ratio": best["energy_mae_meV_per_atom"] / mace[0]["energy_mae_meV_per_atom"]})
    return found


def table(rows, datasets, models, budgets) -> str:
    def cell(row) -> str:
        return (f"{row['force_mae_meV_per_A']:.2f} / {row['energy_mae_meV_per_atom']:.2f} "
                f"[{row['cpu_min']:.2f}, {row['wall_min']:.2f}, {row['epochs']}]")

    lines = ["test force MAE (meV/Å) / energy MAE (meV/atom) [CPU-min, wall-min, epochs] at each budget"]
    for dataset in datasets:
        cells = [["model", *[f"{b:g} CPU-min" for b in budgets]]]
        for model in models:
            found = {row["budget_min"]: row for row in rows if row["dataset"] == dataset and row["model"] == model}
            if found:
                cells.append([model, *[cell(found[b]) if b in found else "-" for b in budgets]])
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        lines.append(f"== {dataset}")
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                  for row in cells]
    comparisons = against_mace(rows)
    if comparisons:
        lines.append("best mlmd family / MACE (targets: force MAE ratio <= 0.9, energy MAE ratio <= 1)")
        lines += [f"  {c['dataset']:8s} {c['budget_min']:6g} CPU-min  {c['best_family']:12s} force "
                  f"{c['force_mae_ratio']:.2f}  energy {c['energy_mae_ratio']:.2f}" for c in comparisons]
    return "\n".join(lines)


def plot(path: Path, rows, datasets, models) -> None:
    """Test force MAE against CPU-minutes: one panel per dataset, one curve per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    from mlmd.io import atomic_path

    columns = min(2, len(datasets))
    lines = math.ceil(len(datasets) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(5.5 * columns, 4.2 * lines), squeeze=False)
    colours = {model: f"C{k}" for k, model in enumerate(models)}
    for k, dataset in enumerate(datasets):
        axis = axes[k // columns][k % columns]
        for model in models:
            points = sorted((row["cpu_min"], row["force_mae_meV_per_A"]) for row in rows
                            if row["dataset"] == dataset and row["model"] == model)
            if points:
                axis.plot(*zip(*points), marker="o", color=colours[model], label=model,
                          linestyle="--" if model == MACE else "-")
        axis.set_xscale("log")
        axis.set_yscale("log")
        # labelled at this dataset's budgets, in minutes
        axis.set_xticks(sorted({row["budget_min"] for row in rows if row["dataset"] == dataset}))
        axis.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_title(dataset)
        axis.set_xlabel("training CPU time (min, one thread)")
        axis.set_ylabel("test force MAE (meV/Å)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    for k in range(len(datasets), lines * columns):
        axes[k // columns][k % columns].set_visible(False)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)


# --- main -------------------------------------------------------------------------------------------

def parse_minutes(text: str, option: str) -> list:
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise SystemExit(f"{option} must be comma-separated minutes, e.g. 5,20; got {text!r}") from None
    if not values or values[0] <= 0:
        raise SystemExit(f"{option} must list positive minutes, e.g. 5,20; got {text!r}")
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--budgets", default="5,20", help="CPU-minutes of every model on every dataset (5,20)")
    parser.add_argument("--long-budget", type=float, default=60.0,
                        help="CPU-minutes of MACE and of the best mlmd family on the molecules (60; 0: none)")
    parser.add_argument("--long-families", default="auto",
                        help="mlmd families given the long budget: auto (the lowest validation force MAE at the "
                             "last budget, per molecule) or a comma list")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma list of {', '.join(DATASETS)}")
    parser.add_argument("--families", default="all",
                        help="comma list of potential families and/or mace (all: every registered one and mace)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time, one thread each (2)")
    parser.add_argument("--out", type=Path, default=Path("accuracy-work"), help="folder for data, runs and report")
    parser.add_argument("--resume", action="store_true", help="keep the finished trainings in --out, run the rest")
    parser.add_argument("--frames", type=int, default=None, help="frames of every dataset (default: its recipe's)")
    parser.add_argument("--training-json", default="{}",
                        help='JSON object of [training] keys for every mlmd run, e.g. {"stage_two_fraction": 0.8}')
    parser.add_argument("--mace-python", default=benchmark_mace.DEFAULT_MACE_PYTHON)
    parser.add_argument("--mace-args", default="", help="extra mace_run_train arguments, appended (they win)")
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)  # one training, in its own process
    args = parser.parse_args(argv)
    if args.job is not None:
        return run_job(args.job)

    budgets = parse_minutes(args.budgets, "--budgets")
    long_budget = args.long_budget if args.long_budget and args.long_budget > 0 else None
    if long_budget is not None and long_budget <= budgets[-1]:
        raise SystemExit(f"--long-budget {long_budget:g} must exceed the largest of --budgets ({budgets[-1]:g})")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for name in datasets:
        if name not in DATASETS:
            raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    known = potential_families()
    models = known + [MACE] if args.families == "all" else [f.strip() for f in args.families.split(",") if f.strip()]
    for name in models:
        if name not in known + [MACE]:
            raise SystemExit(f"unknown family {name!r}; the potential families are {', '.join(known)} (and mace)")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {args.jobs}")
    try:
        overrides = json.loads(args.training_json)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--training-json is not valid JSON ({exc}); write e.g. '{{\"lr\": 0.002}}'") from None
    out = args.out.resolve()
    if (out / "runs").exists() and not args.resume:
        raise SystemExit(f"{out} already holds runs; pass --resume to keep the finished ones, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    versions = {}
    if MACE in models:
        try:
            versions["mace"] = benchmark_mace.check_mace(args.mace_python, out)
        except SystemExit as exc:
            models.remove(MACE)
            message = f"MACE is skipped: {exc}"
            log(message)
            notes.append(message.splitlines()[0])
    families = [m for m in models if m != MACE]
    long_families = None if args.long_families == "auto" else [f for f in args.long_families.split(",") if f]
    if long_families is None and len(families) == 1:
        long_families = families  # nothing to choose between

    import torch

    import mlmd

    versions["mlmd"] = {"mlmd": mlmd.__version__, "torch": torch.__version__, "python": sys.version.split()[0]}
    data = {name: make_dataset(name, out, args.frames) for name in datasets}
    described = {}
    for name in datasets:
        dataset, split, _, _ = test_set(data[name])
        paths = benchmark_mace.write_split(dataset, split, out / "data" / f"{name}-split")
        described[name] = {"path": str(data[name]), "frames": len(dataset), "recipe": DATASETS[name],
                           "split": {k: len(getattr(split, k)) for k in ("train", "validation", "test")},
                           "split_seed": SPLIT_SEED, "xyz": {k: str(v) for k, v in paths.items()}}

    def marks_of(dataset: str, model: str, long: bool) -> list:
        return budgets + ([long_budget] if long and long_budget and DATASETS[dataset]["molecule"] else [])

    def spec(model: str, dataset: str, marks, suffix: str = "") -> dict:
        directory = out / "runs" / dataset / (model + suffix)
        base = {"name": f"{dataset}/{model}{suffix}", "model": model, "dataset": dataset, "kind": MACE
                if model == MACE else "mlmd", "data": str(data[dataset]), "marks": marks, "directory": str(directory)}
        if model == MACE:
            xyz = described[dataset]["xyz"]
            base["mace"] = {"python": args.mace_python, "args": mace_arguments(args.mace_args),
                            "train_xyz": xyz["train"], "valid_xyz": xyz["validation"], "test_xyz": xyz["test"],
                            "stage_two_fraction": MACE_STAGE_TWO_FRACTION}
        else:
            base["config"] = mlmd_config(model, dataset, data[dataset], directory, marks, overrides)
        return base

    jobs = []
    for dataset in datasets:
        for model in models:
            long = model == MACE or (long_families is not None and model in long_families)
            jobs.append(spec(model, dataset, marks_of(dataset, model, long)))
    chosen = {}      # molecule -> the job of the mlmd family trained again for the long budget
    finished = {}    # job name -> whether it succeeded

    def on_done(done: dict, ok: bool):
        """After the last short mlmd run on a molecule: the best family by validation force MAE runs long."""
        finished[done["name"]] = ok
        dataset = done["dataset"]
        if (long_families is not None or long_budget is None or not DATASETS[dataset]["molecule"]
                or done["kind"] == MACE or done["name"].endswith("-long") or dataset in chosen):
            return []
        short = [job for job in jobs if job["dataset"] == dataset and job["kind"] == "mlmd"]
        if any(job["name"] not in finished for job in short):
            return []
        scored = []
        for job in short:
            result = load_result(job)
            if result and result["snapshots"] and result["snapshots"][-1]["validation_force_mae_meV_per_A"] is not None:
                scored.append((result["snapshots"][-1]["validation_force_mae_meV_per_A"], job["model"]))
        if not scored:
            return []
        best = min(scored)[1]
        chosen[dataset] = spec(best, dataset, marks_of(dataset, best, True), suffix="-long")
        log(f"[{dataset}] best mlmd family at {budgets[-1]:g} CPU-min (validation force MAE): {best}; "
            f"training it again for {long_budget:g} CPU-min")
        return [chosen[dataset]]

    load_before = os.getloadavg()
    started = time.perf_counter()
    run_jobs(jobs, args.jobs, on_done)

    runs, superseded = [], []
    for job in jobs + list(chosen.values()):
        result = load_result(job)
        if result is None:
            notes.append(f"{job['name']} failed; see {job['directory']}/job.log")
        elif result.get("missing"):
            notes.append(f"{job['name']}: no model at {', '.join(f'{m:g}' for m in result['missing'])} CPU-min "
                         "(no epoch had finished)")
    for job in jobs:
        result = load_result(job)
        if result is None:
            continue
        long_job = chosen.get(job["dataset"])
        if long_job is not None and long_job["model"] == job["model"]:
            long_result = load_result(long_job)
            if long_result is not None:
                superseded.append(result)
                runs.append(long_result)
                continue
            notes.append(f"{job['dataset']}/{job['model']}-long failed; its short run is reported")
        runs.append(result)
    rows = report_rows(runs)
    report = {
        "command": [sys.executable, *sys.argv], "budgets_min": budgets, "long_budget_min": long_budget,
        "clock": "process CPU time (user + system), one thread per training", "jobs": args.jobs,
        "versions": versions, "datasets": described, "models": models, "long_families":
        {dataset: job["model"] for dataset, job in chosen.items()} if long_families is None else long_families,
        "mace_recipe": {"arguments": mace_arguments(args.mace_args), "stage_two_fraction": MACE_STAGE_TWO_FRACTION},
        "mlmd_training_overrides": overrides, "results": rows, "against_mace": against_mace(rows), "runs": runs,
        "superseded_runs": superseded,
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "cpus": os.cpu_count(),
        "invocation_wall_min": (time.perf_counter() - started) / 60.0, "notes": notes}
    write_json(out / "benchmark_accuracy.json", report)
    plot(out / "benchmark_accuracy.png", rows, datasets, models)
    log("\n" + table(rows, datasets, models, sorted({row["budget_min"] for row in rows})))
    for note in notes:
        log("note: " + note)
    log(f"report: {out / 'benchmark_accuracy.json'}\ncurves: {out / 'benchmark_accuracy.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
