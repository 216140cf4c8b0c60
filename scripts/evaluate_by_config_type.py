"""Errors of a model per kind of frame: force and energy MAE grouped by an info key (default ``config_type``).

``mlmd generate`` records in every frame which kind it is (``md``, ``displaced-0.07``,
``displaced-md-0.08``, ``strained-0.03``, ``surface-111``), so one file of frames
made with ``--displacements``/``--strain``/``--surface`` gives the error off the
training distribution next to the in-distribution (``md``) error::

    mlmd generate cu --frames 150 --seed 3 --displacements 0.07,0.15 --strain 0.03 -o cu-off.xyz
    python scripts/evaluate_by_config_type.py model.pt cu-off.xyz --json errors.json

Per group: frames, force MAE and RMSE (meV/Å, over all components) and energy MAE
(meV/atom), from the model's ASE calculator against the stored reference labels.
"""

import argparse
import json
from collections import defaultdict
from typing import Dict

import numpy as np


def errors_by_config_type(model, frames, key: str = "config_type", device: str = "cpu") -> Dict[str, Dict[str, float]]:
    """``{group: {frames, force_mae_meV_per_A, force_rmse_meV_per_A, energy_mae_meV_per_atom}}`` of ``model``
    (a path or a loaded model) on ``frames`` (ASE Atoms with reference energy and forces, or a file),
    grouped by ``atoms.info[key]`` (frames without it form the group ``"unlabelled"``)."""
    from ase.io import read

    import mlmd

    if isinstance(frames, str):
        frames = read(frames, ":")
    calculator = mlmd.MLMDCalculator(model, device=device)
    force_errors = defaultdict(list)
    energy_errors = defaultdict(list)
    for atoms in frames:
        group = str(atoms.info.get(key, "unlabelled"))
        reference_energy = atoms.get_potential_energy()
        reference_forces = atoms.get_forces()
        copy = atoms.copy()
        copy.calc = calculator
        force_errors[group].append((copy.get_forces() - reference_forces).ravel())
        energy_errors[group].append((copy.get_potential_energy() - reference_energy) / len(atoms))
    table = {}
    for group in sorted(force_errors):
        forces = np.concatenate(force_errors[group])
        table[group] = {"frames": len(energy_errors[group]),
                        "force_mae_meV_per_A": 1000 * float(np.abs(forces).mean()),
                        "force_rmse_meV_per_A": 1000 * float(np.sqrt(np.mean(forces ** 2))),
                        "energy_mae_meV_per_atom": 1000 * float(np.abs(energy_errors[group]).mean())}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="exported model file (mlmd export)")
    parser.add_argument("frames", help="labelled frames (extended XYZ)")
    parser.add_argument("--key", default="config_type", help="info key to group by (default config_type)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the table to this JSON file")
    args = parser.parse_args()
    table = errors_by_config_type(args.model, args.frames, args.key, args.device)
    print(f"{'group':22s} {'frames':>6s} {'F MAE':>9s} {'F RMSE':>9s} {'E MAE':>9s}   (meV/Å, meV/Å, meV/atom)")
    for group, row in table.items():
        print(f"{group:22s} {row['frames']:6d} {row['force_mae_meV_per_A']:9.2f} {row['force_rmse_meV_per_A']:9.2f} "
              f"{row['energy_mae_meV_per_atom']:9.2f}")
    if args.json:
        from mlmd.io import atomic_write

        with atomic_write(args.json, "w") as stream:
            json.dump(table, stream, indent=2)


if __name__ == "__main__":
    main()
