"""Remake the pretrained models shipped in ``mlmd/pretrained_models/`` (``mlmd.pretrained(name)``).

    python scripts/train_pretrained.py ethanol [--minutes 90] [--workdir pretrained-work]
    python scripts/train_pretrained.py copper [--minutes 30]

Both are ``facet`` models with the density-product mixing (correlation order 3 per layer, 32 channels,
lmax 2, 2 layers, cutoff 5 Å) and the ZBL repulsion prior, trained in float32 on one thread for ``--minutes``
of process CPU time (``budget_clock = "cpu"``) with a cosine learning rate, a short warm-up and MACE's
energy-weighted second stage over the last 20 % of the budget; the best EMA weights are exported with their
test-split metrics and their errors on off-distribution frames in the model's metadata
(``metadata["test"]``, ``metadata["off_distribution"]``).

- ethanol: 1500 GFN2-xTB frames (tblite) from Langevin MD at 300, 450 and 600 K with 10 % lightly displaced
  (``mlmd generate ethanol``, seed 1; the data of ``scripts/benchmark_accuracy.py``) plus 450 robust frames
  (MD at 300 and 600 K and MD frames displaced by 0.03, 0.05 and 0.07 Å, seed 2; 0.15 Å gave forces up
  to 270 eV/Å whose squared errors swamped the loss);
- copper: 500 EMT frames (bulk, vacancy, (100)/(111) slabs, adatom; MD at 300 and 900 K, seed 1) plus 300
  robust frames (MD frames displaced by 0.05 and 0.1 Å, cells strained up to 3 %, seed 2).

All data are split 80/10/10 with seed 0. The off-distribution frames are made apart and never trained on:
every coordinate of the relaxed minimum displaced by 0.07 Å, and MD at 1.5x the highest training
temperature (900 K for ethanol, 1350 K for copper). Everything is seeded; a rerun on the same hardware and
library versions gives the same data and, up to the CPU-time budget, the same model.
"""

import argparse
import json
import sys
from pathlib import Path

PACKAGE_MODELS = Path(__file__).resolve().parent.parent / "mlmd" / "pretrained_models"

MODEL = dict(family="facet", cutoff=5.0, channels=32, lmax=2, num_layers=2, tensor_product="gaunt",
             spline_intervals=8, mixing_hidden=32, mixing="product", mixing_correlation=3, repulsion="zbl")
TRAINING = dict(epochs=100000, lr=0.005, energy_weight=1.0, force_weight=10.0, ema_decay=0.99,
                lr_schedule="cosine", min_lr=1e-5, warmup_epochs=2, stage_two_fraction=0.8,
                stage_two_energy_weight=100.0, stage_two_force_weight=10.0, early_stopping_patience=None,
                budget_clock="cpu", dtype="float32", device="cpu", seed=0, num_threads=1)

# name -> data (the `mlmd.generate.generate` calls whose frames are concatenated), off-distribution frames
# (generate calls and the config_type kept from each), [model], [training], batch size, default CPU-minutes.
RECIPES = {
    "ethanol": {
        "data": [dict(system="ethanol", frames=1500, temperatures_K=[300.0, 450.0, 600.0], seed=1),
                 dict(system="ethanol", frames=450, temperatures_K=[300.0, 600.0], displacements_A=[0.03, 0.05, 0.07],
                      displace_from="md", seed=2)],
        "off_distribution": [(dict(system="ethanol", frames=100, temperatures_K=[300.0], displacements_A=[0.07],
                                   seed=3), "displaced-0.07"),
                             (dict(system="ethanol", frames=50, temperatures_K=[900.0], displaced_fraction=0.0,
                                   seed=3), "md")],
        "model": MODEL, "training": TRAINING, "batch_size": 4, "minutes": 90.0,
    },
    "copper": {
        "data": [dict(system="cu", frames=500, seed=1),
                 dict(system="cu", frames=300, displacements_A=[0.05, 0.1], displace_from="md", strain=0.03, seed=2)],
        "off_distribution": [(dict(system="cu", frames=72, temperatures_K=[300.0], displacements_A=[0.07], seed=3),
                              "displaced-0.07"),
                             (dict(system="cu", frames=36, temperatures_K=[1350.0], displaced_fraction=0.0, seed=3),
                              "md")],
        "model": MODEL, "training": TRAINING, "batch_size": 4, "minutes": 30.0,
    },
}


def frames_of(calls, path: Path):
    """The frames of the ``generate`` calls, concatenated in ``path``; each call's frames are kept in
    ``<path stem>-part<i>.xyz`` so that an interrupted run does not label them again."""
    from ase.io import read

    from mlmd.generate import generate
    from mlmd.io import write_frames

    if not path.exists():
        frames = []
        for index, call in enumerate(calls):
            part = path.with_name(f"{path.stem}-part{index}.xyz")
            if not part.exists():
                write_frames(part, generate(**call))
            frames += read(part, ":")
        write_frames(path, frames)
    return read(path, ":")


def off_distribution_frames(name: str, workdir: Path):
    """The off-distribution frames of ``name``, each tagged ``off_distribution`` = what it is."""
    from mlmd.generate import generate
    from mlmd.io import write_frames
    from ase.io import read

    path = workdir / f"{name}-off-distribution.xyz"
    if not path.exists():
        kept = []
        for call, config_type in RECIPES[name]["off_distribution"]:
            label = (f"displaced-{call['displacements_A'][0]:g}A-from-minimum" if "displacements_A" in call
                     else f"md-{call['temperatures_K'][0]:g}K")
            for atoms in generate(**call):
                if atoms.info.get("config_type") == config_type:
                    atoms.info["off_distribution"] = label
                    kept.append(atoms)
        write_frames(path, kept)
    return read(path, ":")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--minutes", type=float, default=None, help="training budget in CPU-minutes "
                        "(default: ethanol 90, copper 30)")
    parser.add_argument("--workdir", type=Path, default=Path("pretrained-work"))
    parser.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    parser.add_argument("--from-checkpoint", type=Path, default=None,
                        help="export this checkpoint or snapshot of the run instead of training (e.g. a "
                             "snapshot-60min.pt of an interrupted run)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from evaluate_by_config_type import errors_by_config_type
    from mlmd.train import export_checkpoint, train

    recipe = RECIPES[args.name]
    minutes = args.minutes or recipe["minutes"]
    args.workdir.mkdir(parents=True, exist_ok=True)
    data_path = args.workdir / f"{args.name}.xyz"
    frames_of(recipe["data"], data_path)
    off_distribution = off_distribution_frames(args.name, args.workdir)
    config = {
        "data": {"path": str(data_path), "validation_fraction": 0.1, "test_fraction": 0.1, "seed": 0,
                 "batch_size": recipe["batch_size"]},
        "model": recipe["model"],
        "training": {**recipe["training"], "max_time_min": minutes, "snapshot_minutes": [minutes / 3, 2 * minutes / 3]},
        "output": {"directory": str(args.workdir / "training")},
    }
    if args.from_checkpoint is None:
        result = train(config, resume=args.resume)
        checkpoint, test_metrics = result.best_checkpoint, result.test_metrics
    else:
        checkpoint, test_metrics = args.from_checkpoint, None
    output = PACKAGE_MODELS / f"{args.name}.pt"
    staged = args.workdir / f"{args.name}-staged.pt"
    export_checkpoint(checkpoint, staged, best=True, overwrite=True)
    test = test_frames(config, staged)
    off = errors_by_config_type(str(staged), off_distribution, key="off_distribution")
    export_checkpoint(checkpoint, output, best=True, overwrite=True, test_metrics=test_metrics or test["all"],
                      test=test, off_distribution=off,
                      recipe={"data": recipe["data"], "off_distribution": recipe["off_distribution"], "config": config})
    print(json.dumps({"model": str(output), "test": test, "off_distribution": off}, indent=1))
    return 0


def test_frames(config, model_path: Path) -> dict:
    """Errors of the model on the test split of ``config``'s data, all together and per config_type."""
    from evaluate_by_config_type import errors_by_config_type
    from mlmd.data import Dataset

    dataset = Dataset.from_file(config["data"]["path"])
    split = dataset.split(config["data"]["validation_fraction"], config["data"]["test_fraction"],
                          seed=config["data"]["seed"])
    frames = [dataset.frames[i] for i in split.test]
    table = errors_by_config_type(str(model_path), frames)
    table["all"] = errors_by_config_type(str(model_path), frames, key="__none__")["unlabelled"]
    return table


if __name__ == "__main__":
    sys.exit(main())
