"""``mlmd demo``: the main job on embedded defaults, no arguments needed.

It loads the pretrained ethanol model shipped in the package
(:func:`mlmd.pretrained`), starts from ethanol at its equilibrium geometry and
runs the same short Langevin simulation (BAOAB, 300 K, 0.5 fs, γ = 10/ps) three ways:

1. in ASE: :class:`mlmd.MLMDCalculator` driven by mlmd's ``BAOAB`` ASE dynamics,
   trajectory written by ASE (``ase.traj``);
2. in OpenMM: the model as an OpenMM force (openmm-torch's ``TorchForce`` where
   the ``torchforce`` extra is installed, else ``openmm.PythonForce``) with mlmd's BAOAB
   ``CustomIntegrator`` (``openmm.dcd``, ``openmm.csv``, ``openmm.png``);
3. in mlmd's batched torch integrators: independent replicas with different
   seeds in one batch (``replicas.h5``, ``replicas.csv``, ``replicas.png``).

It prints what it ran, the mean temperatures and speeds, and where the files are.
"""

import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .cli import Command
from .constants import FS_PS
from .errors import MLMDError
from .io import atomic_path

TEMPERATURE_K = 300.0
TIMESTEP_FS = 0.5
# Strong enough to bring 9 atoms from the cold equilibrium geometry to 300 K within ~0.2 ps.
FRICTION_PER_PS = 10.0
SEED = 0


def _ethanol():
    from ase.build import molecule

    return molecule("CH3CH2OH")


def _run_ase(model, steps: int, stride: int, folder: Path) -> Dict[str, float]:
    """BAOAB in ASE with the ASE calculator; trajectory through ASE's own writer."""
    from ase import units
    from ase.io.trajectory import Trajectory
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from .ase import MLMDCalculator
    from .ase.dynamics import BAOAB

    atoms = _ethanol()
    atoms.calc = MLMDCalculator(model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(SEED))
    dynamics = BAOAB(atoms, TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE_K,
                     friction=FRICTION_PER_PS * FS_PS / units.fs, seed=SEED)
    temperatures: List[float] = []
    path = folder / "ase.traj"
    with atomic_path(path) as temporary:
        trajectory = Trajectory(str(temporary), "w", atoms)
        dynamics.attach(trajectory.write, interval=stride)
        dynamics.attach(lambda: temperatures.append(atoms.get_temperature()), interval=stride)
        started = time.perf_counter()
        dynamics.run(steps)
        elapsed = time.perf_counter() - started
        trajectory.close()
    return {"mean_temperature_K": float(np.mean(temperatures)), "seconds": elapsed, "frames": len(temperatures)}


def run(output: Path = Path("mlmd-demo"), steps: int = 2000, replicas: int = 8, stride: int = 20,
        model: Optional[str] = None, progress: bool = True, threads: Optional[int] = None) -> Dict[str, Dict]:
    """Run the demo into folder ``output`` (its files are the demo's own and are replaced on every run)
    with ``threads`` torch CPU threads (None: :data:`mlmd.model.DEFAULT_THREADS`); returns what each
    engine did."""
    from .model import torch_threads

    with torch_threads(threads):
        return _demo(Path(output), steps, replicas, stride, model, progress)


def _demo(output: Path, steps: int, replicas: int, stride: int, model: Optional[str], progress: bool):
    from . import md
    from .model import load_model, pretrained


    output.mkdir(parents=True, exist_ok=True)
    path = pretrained("ethanol") if model is None else model
    loaded = load_model(path)
    metrics = loaded.metadata.get("test_metrics", {})
    say = print if progress else (lambda *args, **kwargs: None)
    say(f"model: {loaded.path or path}")
    if metrics:
        say(f"  {loaded.family} potential for {loaded.species}, test split of its GFN2-xTB data: "
            f"force MAE {metrics['force_mae_meV_per_A']:.1f} meV/Å, "
            f"energy MAE {metrics['energy_mae_meV_per_atom']:.2f} meV/atom")
    simulation_ps = steps * TIMESTEP_FS * FS_PS
    say(f"ethanol, Langevin BAOAB at {TEMPERATURE_K:.0f} K, {TIMESTEP_FS} fs steps, {steps} steps "
        f"({simulation_ps:g} ps), friction {FRICTION_PER_PS:g}/ps\n")

    summary: Dict[str, Dict] = {}
    say("1. ASE (MLMDCalculator + mlmd.ase.BAOAB) ...")
    summary["ase"] = _run_ase(loaded, steps, stride, output)
    summary["ase"]["files"] = {"trajectory": str(output / "ase.traj")}

    common = dict(temperature_K=TEMPERATURE_K, timestep_fs=TIMESTEP_FS, steps=steps, friction_per_ps=FRICTION_PER_PS,
                  seed=SEED, stride=stride, progress=progress, overwrite=True)
    from .openmm.force import resolve_backend

    force = {"torch": "TorchForce", "python": "PythonForce"}.get(resolve_backend("auto"), "force")
    say(f"2. OpenMM ({force} + BAOAB CustomIntegrator) ...")
    result = md.run(_ethanol(), model=loaded, engine="openmm", integrator="baoab", log=output / "openmm.csv",
                    trajectory=output / "openmm.dcd", **common)
    summary["openmm"] = _summary(result)
    say(f"3. mlmd's batched torch integrators, {replicas} replicas in one batch ...")
    result = md.run(_ethanol(), model=loaded, engine="torch", integrator="baoab", replicas=replicas,
                    log=output / "replicas.csv", trajectory=output / "replicas.h5", **common)
    summary["replicas"] = _summary(result)

    say("\nwhat ran                           mean T (K)   ns/day   files")
    rows = [("ASE, 1 molecule", summary["ase"]["mean_temperature_K"],
             md.ns_per_day(steps, TIMESTEP_FS, summary["ase"]["seconds"]), summary["ase"]["files"]),
            ("OpenMM, 1 molecule", summary["openmm"]["mean_temperature_K"], summary["openmm"]["ns_per_day"],
             summary["openmm"]["files"]),
            (f"torch, {replicas} replicas (each)", summary["replicas"]["mean_temperature_K"],
             summary["replicas"]["ns_per_day"], summary["replicas"]["files"])]
    for name, temperature, speed, files in rows:
        say(f"{name:<34} {temperature:>10.1f} {speed:>8.2f}   " + ", ".join(str(f) for f in files.values()))
    say(f"\n(a {simulation_ps:g} ps run of 9 atoms is short: mean temperatures scatter by tens of K around "
        f"{TEMPERATURE_K:.0f} K)\nopen the trajectories with e.g. `mdtraj.load('{output / 'openmm.dcd'}', "
        f"top='{output / 'openmm_topology.pdb'}')` or `ase gui {output / 'ase.traj'}`")
    return summary


def _summary(result) -> Dict:
    temperatures = result.log[:, 4]
    return {"mean_temperature_K": float(np.mean(temperatures[1:])) if len(temperatures) > 1 else float("nan"),
            "ns_per_day": float(result.ns_per_day), "files": {k: str(v) for k, v in result.files.items()}}


def _add_arguments(parser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("mlmd-demo"), help="folder for the results")
    parser.add_argument("--steps", type=int, default=2000, help="MD steps per engine (default 2000 = 1 ps)")
    parser.add_argument("--replicas", type=int, default=8, help="replicas in the batched torch run")
    parser.add_argument("--model", help="an exported model instead of the shipped ethanol model")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    from .cli import add_threads_option

    add_threads_option(parser)


def _run(args) -> int:
    if args.steps < 1 or args.replicas < 1:
        raise MLMDError("--steps and --replicas must be at least 1")
    run(args.output, steps=args.steps, replicas=args.replicas, stride=max(1, min(20, args.steps // 10)),
        model=args.model, progress=not args.quiet, threads=args.threads)
    return 0


COMMAND = Command(name="demo", add_arguments=_add_arguments, run=_run,
                  example="mlmd demo --steps 200",
                  help="the main job on embedded defaults: pretrained ethanol MD in ASE, OpenMM and batched "
                  "torch replicas")
