"""Milliseconds per force call of one mlmd model through each engine route, side by side.

    python scripts/benchmark_engines.py [--repeats 50] [--threads 1] [--device cpu] [--batch 8]

Routes: (a) mlmd's ASE calculator; (b) metatomic-ase's calculator on the metatomic export;
(c) the TorchSim adapter ``mlmd.torchsim.MLMDModel`` on one system and (d) on ``--batch``
copies in one state (time per system); (e) TorchSim's ``MetatomicModel`` on the export, one
system. Every call first moves all atoms by up to 0.01 Å (as an MD step would, so that each
engine's neighbour list with its skin is reused as it would be) and asks for energy and
forces only. Models: the shipped ``ethanol`` model (equivariant, float32) on ethanol, and a
float64 ``spline`` copper model (random coefficients, two- and three-body) on 256-atom fcc
copper. Calls are interleaved route by route; the first 5 of each are warm-up. Prints medians.
"""

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.calculator import all_changes

import mlmd
from mlmd.model import export_model
from mlmd.training.export import export
from potentials import FAMILIES
from potentials.testing import ethanol

WARMUP = 5


def copper_model(folder: Path) -> Path:
    torch.manual_seed(0)
    model = FAMILIES["spline"]([29], cutoff=4.5, cutoff_3body=3.5, r_min=1.5, r_min_3body=1.5, n_intervals=8)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.05)
    return export_model(model.double().eval(), folder / "copper.pt")


def cases(folder: Path):
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(4)
    crystal.rattle(0.02, seed=0)
    return {"ethanol (equivariant, float32, 9 atoms)": (mlmd.pretrained("ethanol"), ethanol()),
            "Cu fcc (spline, float64, 256 atoms)": (copper_model(folder), crystal)}


def routes(model_file: Path, atoms, folder: Path, device: str, batch: int):
    """``name -> call(positions)``: each runs one energy-and-forces evaluation at ``positions``."""
    import torch_sim as ts
    from metatomic_ase import MetatomicCalculator

    from mlmd.torchsim import MLMDModel

    exported = export(model_file, folder / f"{model_file.stem}-mta.pt", format="metatomic", overwrite=True)
    ase_calc = mlmd.MLMDCalculator(model_file, device=device)
    mta_calc = MetatomicCalculator(str(exported), device=device)
    adapter = MLMDModel(model_file, device=device, compute_stress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch_sim warns that metatrain (for .ckpt files) is missing
        from torch_sim.models.metatomic import MetatomicModel
    ts_metatomic = MetatomicModel(str(exported), device=device, compute_stress=False)
    single = ts.io.atoms_to_state([atoms], device, adapter.dtype)
    many = ts.io.atoms_to_state([atoms] * batch, device, adapter.dtype)

    def calculator(calc):
        def call(positions):
            moved = atoms.copy()
            moved.positions = positions
            calc.calculate(moved, ["energy", "forces"], all_changes)
        return call

    def torchsim(model, state, copies=1):
        def call(positions):
            state.positions = torch.as_tensor(np.tile(positions, (copies, 1)), dtype=state.positions.dtype,
                                              device=device)
            model(state)
        return call

    return {"mlmd ASE calculator": (calculator(ase_calc), 1),
            "metatomic-ase on the export": (calculator(mta_calc), 1),
            "TorchSim MLMDModel, 1 system": (torchsim(adapter, single), 1),
            f"TorchSim MLMDModel, batch of {batch}": (torchsim(adapter, many, batch), batch),
            "TorchSim MetatomicModel on the export": (torchsim(ts_metatomic, single), 1)}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        for title, (model_file, atoms) in cases(folder).items():
            calls = routes(Path(model_file), atoms, folder, args.device, args.batch)
            times = {name: [] for name in calls}
            for step in range(args.repeats + WARMUP):
                positions = atoms.positions + rng.uniform(-0.01, 0.01, atoms.positions.shape)
                for name, (call, _) in calls.items():
                    synchronize(args.device)
                    start = time.perf_counter()
                    call(positions)
                    synchronize(args.device)
                    if step >= WARMUP:
                        times[name].append(time.perf_counter() - start)
            print(f"\n{title}, {args.device}, {args.threads} thread(s), median of {args.repeats}:")
            for name, (_, systems) in calls.items():
                median = statistics.median(times[name]) * 1e3
                print(f"  {name:42s} {median:8.2f} ms/call  {median / systems:8.2f} ms/system")


if __name__ == "__main__":
    main()
