"""GPU paths, run by ``scripts/check_gpu.sh`` on a machine with CUDA; every test skips cleanly without one.

Each compares the device result with the CPU result of the same code (float64, so the tolerance is
set by reduction order, not by precision)."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

import potentials
from mlmd.dynamics import replicate
from mlmd.model import export_model, load_model
from openmm_backends import BACKENDS

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/check_gpu.sh)")]
SPECIES = [1, 6, 8, 29]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu")
    paths = {}
    for family in ("equivariant", "facet", "spline"):
        torch.manual_seed(0)
        paths[family] = folder / f"{family}.pt"
        export_model(potentials.FAMILIES[family](species=SPECIES, cutoff=5.0).double(), paths[family])
    return paths


def contract_inputs(atoms, device):
    system = replicate(atoms, 2, device=device)
    return system.positions, system.atomic_numbers, system.cell, system.pbc, system.batch


@pytest.mark.parametrize("family", ["equivariant", "facet", "spline"])
@pytest.mark.parametrize("name", ["ethanol", "cu"])
def test_models_on_cuda_equal_cpu(model_files, family, name):
    atoms = molecule("CH3CH2OH") if name == "ethanol" else bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=1)
    cpu = load_model(model_files[family], device="cpu")(*contract_inputs(atoms, "cpu"), True, atoms.pbc.all())
    gpu = load_model(model_files[family], device="cuda")(*contract_inputs(atoms, "cuda"), True, atoms.pbc.all())
    for key in cpu:
        np.testing.assert_allclose(gpu[key].cpu().numpy(), cpu[key].numpy(), rtol=1e-9, atol=1e-10)


def test_md_engine_on_cuda_follows_cpu(model_files):
    import mlmd.md

    atoms = molecule("CH3CH2OH")
    runs = [mlmd.md.run(atoms, model=model_files["equivariant"], integrator="baoab", steps=20, stride=10,
                        replicas=4, device=device, temperature_K=300.0) for device in ("cpu", "cuda")]
    np.testing.assert_allclose(runs[1].positions, runs[0].positions, atol=1e-8)


def test_forecaster_rollout_on_cuda_follows_cpu():
    import mlmd.forecast

    torch.manual_seed(0)
    forecaster = potentials.FAMILIES["forecaster"](species=[1, 6, 8], masses=[1.008, 12.011, 15.999], cutoff=4.0,
                                                   timestep_fs=0.5, interval_steps=10).double()
    runs = [mlmd.forecast.run(molecule("CH3CH2OH"), forecaster, steps=10, replicas=4, device=device, seed=1,
                              min_distance_A=None, max_temperature_K=float("inf")) for device in ("cpu", "cuda")]
    np.testing.assert_allclose(runs[1].positions, runs[0].positions, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_openmm_cuda_platform(model_files, backend):
    import openmm

    from mlmd.openmm import create_system, topology_from_atoms

    atoms = molecule("CH3CH2OH")
    topology, positions = topology_from_atoms(atoms)
    energies = []
    for platform in ("Reference", "CUDA"):
        system = create_system(topology, model_files["equivariant"], backend=backend)
        context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName(platform))
        context.setPositions(positions)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy()._value)
    assert energies[1] == pytest.approx(energies[0], rel=1e-6)


def test_gp_saddle_search_on_cuda_matches_cpu():
    from mlmd.saddle import search
    from mlmd.saddle.surfaces import muller_brown_atoms

    mode = np.array([[1.0, -0.5, 0.0]])
    results = [search(muller_brown_atoms(-0.7, 0.9), method="gp-dimer", mode=mode, fmax=0.01, device=device)
               for device in ("cpu", "cuda")]
    assert all(result.converged for result in results)
    np.testing.assert_allclose(results[1].atoms.positions, results[0].atoms.positions, atol=1e-3)
