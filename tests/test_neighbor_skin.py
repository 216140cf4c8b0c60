"""The Verlet (skin) neighbour list carried between calls: every engine path gives the fresh-list result
at every step, through diffusion, wrapping into the cell and cell changes, with far fewer builds."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.md.langevin import Langevin
from ase import units

from mlmd.model import export_model, load_model
from potentials.neighbors import VerletList, neighbor_list
from openmm_backends import USABLE_BACKENDS
from reference_potentials import LennardJonesPotential

SIGMA, EPSILON, CUTOFF = 3.405, 0.0103, 7.0  # argon


@pytest.fixture(scope="module")
def liquid_frames():
    """A hot Lennard-Jones argon liquid (ASE's own Langevin and LJ): atoms diffuse and leave the cell."""
    atoms = bulk("Ar", "fcc", a=5.8, cubic=True).repeat(2)
    atoms.calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=CUTOFF)
    rng = np.random.default_rng(0)
    atoms.set_velocities(rng.normal(scale=0.02, size=(len(atoms), 3)))
    dynamics = Langevin(atoms, 5 * units.fs, temperature_K=400, friction=0.02, rng=rng)
    frames = []
    for _ in range(120):
        dynamics.run(1)
        frames.append(atoms.get_positions().copy())
    return atoms, np.array(frames)


def contract(model, positions, atoms, cell=None):
    cell = atoms.cell.array if cell is None else cell
    out = model(torch.tensor(positions), torch.tensor(atoms.numbers), torch.tensor(cell)[None],
                torch.tensor(atoms.pbc)[None], torch.zeros(len(atoms), dtype=torch.int64), True, True)
    return out["energy"].numpy(), out["forces"].numpy(), out["stress"].numpy()


@pytest.fixture(scope="module")
def lj_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("skin") / "lj.pt"
    export_model(LennardJonesPotential([18], SIGMA, EPSILON, CUTOFF).double(), path)
    return path


@pytest.mark.parametrize("wrap", [False, True], ids=["unwrapped", "wrapped-into-the-cell"])
def test_skin_list_equals_a_fresh_list_at_every_step(liquid_frames, lj_model, wrap):
    atoms, frames = liquid_frames
    carried, fresh = load_model(lj_model, skin_A=1.0), load_model(lj_model, skin_A=0.0)
    assert carried.neighbors is not None and fresh.neighbors is None
    cell = atoms.cell.array
    for positions in frames:
        if wrap:  # as forecast rollouts do: atoms that leave the cell come back through the other side
            fractional = positions @ np.linalg.inv(cell)
            positions = (fractional - np.floor(fractional)) @ cell
        for a, b in zip(contract(carried, positions, atoms), contract(fresh, positions, atoms)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    builds = carried.neighbors.builds
    assert builds <= len(frames) / 3, f"{builds} builds for {len(frames)} calls"
    # the test is not vacuous: atoms moved further than half the skin, so the list was rebuilt
    assert builds > 1 and np.abs(frames[-1] - frames[0]).max() > 1.0


def test_a_changed_cell_rebuilds_the_list(liquid_frames, lj_model):
    atoms, frames = liquid_frames
    carried, fresh = load_model(lj_model, skin_A=1.0), load_model(lj_model, skin_A=0.0)
    for k, positions in enumerate(frames[:40]):
        scale = 1.0 + 0.01 * (k // 10)  # a barostat-like step of the cell every 10 calls
        cell, scaled = atoms.cell.array * scale, positions * scale
        for a, b in zip(contract(carried, scaled, atoms, cell), contract(fresh, scaled, atoms, cell)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert carried.neighbors.builds >= 4


def test_the_list_holds_every_pair_a_fresh_list_finds():
    """Directly against neighbor_list: after moves below skin/2 the carried list is a superset."""
    generator = torch.Generator().manual_seed(1)
    positions = torch.rand(60, 3, generator=generator, dtype=torch.float64) * 9.0
    cell, pbc = torch.eye(3, dtype=torch.float64)[None] * 9.0, torch.ones(1, 3, dtype=torch.bool)
    batch = torch.zeros(60, dtype=torch.int64)
    verlet = VerletList(3.0, skin=0.8)
    for _ in range(30):
        positions = positions + (torch.rand(60, 3, generator=generator, dtype=torch.float64) - 0.5) * 0.1
        edges, shifts = verlet(positions, cell, pbc, batch)
        carried = {(int(i), int(j), *map(int, s)) for (i, j), s in zip(edges.T, shifts)}
        expected_edges, expected_shifts = neighbor_list(positions, cell, pbc, batch, 3.0)
        expected = {(int(i), int(j), *map(int, s)) for (i, j), s in zip(expected_edges.T, expected_shifts)}
        assert expected <= carried
    assert verlet.builds < 30


def test_scripted_verlet_list_keeps_its_state():
    """TorchScript (as inside openmm-torch's TorchForce) keeps the list between calls."""
    scripted = torch.jit.script(VerletList(3.0, 1.0))
    positions = torch.rand(20, 3, dtype=torch.float64) * 6
    cell, pbc = torch.zeros(1, 3, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.bool)
    batch = torch.zeros(20, dtype=torch.int64)
    for _ in range(5):
        scripted(positions + 0.01, cell, pbc, batch)
    assert scripted.builds == 1 and scripted.calls == 5


def test_engines_carry_the_list_and_agree_with_fresh_lists(liquid_frames, lj_model):
    """ASE calculator, OpenMM TorchForce and PythonForce over the diffusing liquid: the default (carried
    list) equals a model loaded with skin 0 (a fresh list per call) at every frame."""
    import openmm

    from mlmd import MLMDCalculator
    from mlmd.openmm import create_system, topology_from_atoms

    atoms, frames = liquid_frames
    frames = frames[::3]
    fresh = load_model(lj_model, skin_A=0.0)
    calculators = [MLMDCalculator(lj_model), MLMDCalculator(fresh)]
    topology, _ = topology_from_atoms(atoms)
    _, rotation = atoms.cell.standard_form()  # OpenMM's reduced box frame
    contexts = {}
    for backend in USABLE_BACKENDS:
        for label, model in (("carried", lj_model), ("fresh", fresh)):
            system = create_system(topology, model, backend=backend)
            contexts[backend, label] = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                                      openmm.Platform.getPlatformByName("Reference"))
    for positions in frames:
        results = []
        for calculator in calculators:
            copy = atoms.copy()
            copy.positions = positions
            copy.calc = calculator
            results.append((copy.get_potential_energy(), copy.get_forces()))
        np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-10)
        np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-9, atol=1e-11)
        for backend in USABLE_BACKENDS:
            states = []
            for label in ("carried", "fresh"):
                context = contexts[backend, label]
                context.setPositions(positions @ np.asarray(rotation).T * 0.1)
                states.append(context.getState(getEnergy=True, getForces=True))
            energies = [state.getPotentialEnergy()._value for state in states]
            forces = [state.getForces(asNumpy=True)._value for state in states]
            np.testing.assert_allclose(energies[0], energies[1], rtol=1e-10)
            np.testing.assert_allclose(forces[0], forces[1], rtol=1e-9, atol=1e-9)
    assert calculators[0].model.neighbors.builds < len(frames)
