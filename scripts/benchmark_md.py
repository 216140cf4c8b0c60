"""MD speed: integrator overhead beside the force call, batched replica throughput, and the same
molecule through ASE's Langevin and OpenMM's LangevinMiddleIntegrator.

All models are untrained ``equivariant`` potentials (default size, float32, exported to TorchScript
as ``mlmd md`` runs them); timings are medians over ``--repeats`` timed calls after warm-up calls.

(a) 256-atom periodic FCC Cu (a = 3.61 Å, rattled 0.05 Å), cutoff 5 Å: median force call
    against median full BAOAB step (overhead = step / force - 1), and the BAOAB step alone with
    a force callable that returns stored forces (the integrator's own cost).
(b) ethanol, 1, 8 and 64 replicas in one batch (mlmd's BAOAB): atom-steps per second.
(c) one ethanol through ase.md.langevin.Langevin with MLMDCalculator, and through OpenMM's
    LangevinMiddleIntegrator with the model as a TorchForce (CPU platform, CUDA with --device cuda).
(d) the carried (Verlet, skin) neighbour list before/after: BAOAB MD steps of untrained equivariant,
    facet and spline models on ethanol and 256-atom Cu (``--cu2048`` adds 2,048 atoms) with a fresh
    list at every call (skin 0, before) and with the list carried between steps (skin 1 Å, after):
    ms per step, neighbour-list builds per step, the speed-up, and each family's speed over the
    equivariant model's.

    python scripts/benchmark_md.py --device cpu --repeats 5 --threads 1
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk, molecule
from ase.md.langevin import Langevin

import potentials
from integrators import INTEGRATORS
from integrators.state import init_state, maxwell_boltzmann_velocities
from mlmd import MLMDCalculator
from mlmd.constants import FS_PS, KB_EV_PER_K
from mlmd.dynamics import replicate
from mlmd.model import export_model, load_model

TIMESTEP_FS, TEMPERATURE_K, FRICTION_PER_PS = 0.5, 300.0, 1.0


def median_seconds(calls, repeats: int, warmup: int, sync):
    """Median wall time of each of ``calls`` (a dict of name -> callable), timed in turn (round robin)
    ``repeats`` times after ``warmup`` untimed rounds, so that all see the same machine load."""
    times = {name: [] for name in calls}
    for round_ in range(warmup + repeats):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def exported(species, folder: Path, device: str):
    torch.manual_seed(0)
    path = folder / f"equivariant_{'_'.join(map(str, species))}.pt"
    export_model(potentials.FAMILIES["equivariant"](species=species, cutoff=5.0), path)
    return load_model(path, device=device), path


def replica_state(atoms, replicas: int, model, device: str):
    """A BAOAB-ready batch of ``replicas`` copies of ``atoms`` and its energy/forces callable
    (:meth:`mlmd.model.Model.energy_forces`, which carries the model's neighbour list between calls)."""
    system = replicate(atoms, replicas, seed=0, device=device)
    state = init_state(model.energy_forces, system.positions, kT=KB_EV_PER_K * TEMPERATURE_K,
                       friction=FRICTION_PER_PS * FS_PS, **system.arguments())
    return state.replace(velocities=maxwell_boltzmann_velocities(state)), model.energy_forces


def _stepper(step, state, energy_forces, chunk: int):
    """A callable that advances its own copy of ``state`` by ``chunk`` steps."""
    holder = {"state": state}

    def advance():
        for _ in range(chunk):
            holder["state"] = step(holder["state"], energy_forces, TIMESTEP_FS)

    return advance


def overhead(args, folder, sync):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(4)
    atoms.rattle(0.05, seed=0)
    model, _ = exported([29], folder, args.device)
    state, energy_forces = replica_state(atoms, 1, model, args.device)
    baoab = INTEGRATORS["baoab"]

    def stored(positions, atomic_numbers, cell, pbc, batch):
        return {"energy": state.energy, "forces": state.forces}

    inputs = (state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch)
    medians = median_seconds({"force": lambda: energy_forces(*inputs),
                              "step": _stepper(baoab, state, energy_forces, 1)}, args.repeats, 2, sync)
    force, full = medians["force"], medians["step"]
    alone = median_seconds({"alone": lambda: baoab(state, stored, TIMESTEP_FS)}, max(args.repeats, 50), 5,
                           sync)["alone"]
    print(f"(a) 256-atom Cu, equivariant model, {args.device}")
    print(f"    force call          {force * 1e3:10.2f} ms")
    print(f"    full BAOAB step     {full * 1e3:10.2f} ms   "
          f"overhead {100 * (full / force - 1):+.2f} % of the force call")
    print(f"    BAOAB without model {alone * 1e3:10.3f} ms   = {100 * alone / force:.2f} % of the force call")


def batched(args, folder, sync):
    ethanol = molecule("CH3CH2OH")
    model, path = exported([1, 6, 8], folder, args.device)
    baoab = INTEGRATORS["baoab"]
    print(f"(b) ethanol (9 atoms), mlmd BAOAB, replicas in one batch, {args.device}")
    calls = {}
    for replicas in (1, 8, 64):
        state, energy_forces = replica_state(ethanol, replicas, model, args.device)
        calls[replicas] = _stepper(baoab, state, energy_forces, args.chunk)
    seconds = {r: t / args.chunk for r, t in median_seconds(calls, args.repeats, 1, sync).items()}
    results = {replicas: replicas * len(ethanol) / seconds[replicas] for replicas in calls}
    for replicas in calls:
        print(f"    {replicas:3d} replicas  {seconds[replicas] * 1e3:8.2f} ms/step  "
              f"{results[replicas]:12.0f} atom-steps/s")
    return ethanol, model, path


def engines(args, ethanol, model, model_path, sync):
    import openmm

    from mlmd.openmm import create_system, topology_from_atoms

    print(f"(c) one ethanol, {TEMPERATURE_K:g} K, {TIMESTEP_FS} fs, friction {FRICTION_PER_PS}/ps, "
          f"{args.chunk} steps per timed call")
    state, energy_forces = replica_state(ethanol, 1, model, args.device)
    atoms = ethanol.copy()
    atoms.calc = MLMDCalculator(model_path, device=args.device)
    dynamics = Langevin(atoms, timestep=TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE_K,
                        friction=FRICTION_PER_PS * FS_PS / units.fs, rng=np.random.default_rng(0))
    topology, positions = topology_from_atoms(ethanol)
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE_K, FRICTION_PER_PS, TIMESTEP_FS * FS_PS)
    platform = openmm.Platform.getPlatformByName("CUDA" if args.device.startswith("cuda") else "CPU")
    context = openmm.Context(create_system(topology, model_path), integrator, platform)
    context.setPositions(positions)
    context.setVelocitiesToTemperature(TEMPERATURE_K, 1)
    calls = {
        "mlmd BAOAB (torch integrators)": _stepper(INTEGRATORS["baoab"], state, energy_forces, args.chunk),
        "ASE Langevin + MLMDCalculator": lambda: dynamics.run(args.chunk),
        f"OpenMM LangevinMiddle + TorchForce ({platform.getName()})":
            lambda: (integrator.step(args.chunk), context.getState(getEnergy=True)),
    }
    for name, seconds in median_seconds(calls, args.repeats, 1, sync).items():
        per_step = seconds / args.chunk
        print(f"    {name:48s} {per_step * 1e3:8.2f} ms/step  {len(ethanol) / per_step:10.0f} atom-steps/s")


def skin(args, folder, sync):
    systems = {"ethanol": molecule("CH3CH2OH"), "Cu 256": bulk("Cu", "fcc", a=3.61, cubic=True).repeat(4)}
    if args.cu2048:
        systems["Cu 2048"] = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(8)
    steps = {"ethanol": args.chunk, "Cu 256": max(args.chunk // 4, 2), "Cu 2048": 2}
    baoab = INTEGRATORS["baoab"]
    print(f"(d) carried neighbour list: BAOAB steps, fresh list (skin 0) vs carried (skin {args.skin} Å), "
          f"{args.device}")
    per_step = {}
    for system, atoms in systems.items():
        atoms = atoms.copy()
        atoms.rattle(0.05, seed=0)
        calls, models = {}, {}
        for family in ("equivariant", "facet", "spline"):
            torch.manual_seed(0)
            path = folder / f"{family}.pt"
            export_model(potentials.FAMILIES[family](species=[1, 6, 8, 29], cutoff=5.0), path)
            for label, skin_A in (("before", 0.0), ("after", args.skin)):
                model = load_model(path, device=args.device, skin_A=skin_A)
                state, energy_forces = replica_state(atoms, 1, model, args.device)
                calls[(family, label)] = _stepper(baoab, state, energy_forces, steps[system])
                models[(family, label)] = model
        seconds = median_seconds(calls, args.repeats, 1, sync)
        for key, model in models.items():
            builds = model.neighbors.builds / max(model.neighbors.calls, 1) if model.neighbors is not None else 1.0
            per_step[(system, *key)] = (seconds[key] / steps[system], builds)
        for family in ("equivariant", "facet", "spline"):
            before, after = per_step[(system, family, "before")], per_step[(system, family, "after")]
            equivariant = per_step[(system, "equivariant", "after")][0]
            print(f"    {system:8s} {family:12s} before {before[0] * 1e3:9.2f} ms/step   after "
                  f"{after[0] * 1e3:9.2f} ms/step ({after[1]:.3f} builds/step)   speed-up {before[0] / after[0]:5.2f}x"
                  f"   vs equivariant {equivariant / after[0]:6.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--chunk", type=int, default=20, help="steps per timed call in (b) and (c)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skin", type=float, default=1.0, help="skin (Å) of the carried list in (d)")
    parser.add_argument("--cu2048", action="store_true", help="(d) also on 2,048 Cu atoms (slow)")
    parser.add_argument("--only", choices=("a", "b", "c", "d"), help="run one part only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as folder:
        if args.only in (None, "a"):
            overhead(args, Path(folder), sync)
        if args.only in (None, "b", "c"):
            ethanol, model, path = batched(args, Path(folder), sync)
            engines(args, ethanol, model, path, sync)
        if args.only in (None, "d"):
            skin(args, Path(folder), sync)


if __name__ == "__main__":
    main()
