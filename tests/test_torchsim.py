"""TorchSim: the ``MLMDModel`` adapter against mlmd's ASE calculator, TorchSim's own integrators running
mlmd models, and TorchSim's ``MetatomicModel`` on the metatomic export.

References: :class:`mlmd.MLMDCalculator` (tested against finite differences) one system at a time,
and TorchSim's ``MetatomicModel`` (a second engine: metatomic's neighbour list and autograd).
Tolerance for the float64 model: 1e-10 relative to the largest value (the same arithmetic on
batched input; only the order of sums differs).
"""

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk

import mlmd
from potentials import FAMILIES
from potentials.testing import ethanol

ts = pytest.importorskip("torch_sim")

from mlmd.errors import MLMDError  # noqa: E402
from mlmd.torchsim import MLMDModel  # noqa: E402

# Species of the test model: copper, ethanol, and the Si and Fe of TorchSim's own model validator.
SPECIES = [1, 6, 8, 14, 26, 29]
RTOL = 1e-10
# kT in eV per K (TorchSim's metal units).
KB_EV_PER_K = float(ts.units.MetalUnits.temperature)


@pytest.fixture(scope="module")
def spline_model():
    """A float64 spline model with random coefficients (two- and three-body) for every species pair."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = FAMILIES["spline"](SPECIES, cutoff=4.5, cutoff_3body=3.5, r_min=0.8, r_min_3body=0.8,
                                   n_intervals=8)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0.0, 0.05)
    return model.double().eval()


@pytest.fixture(scope="module")
def model_file(spline_model, tmp_path_factory):
    from mlmd.model import export_model

    return export_model(spline_model, tmp_path_factory.mktemp("torchsim") / "spline.pt")


def periodic_systems():
    """Two copper cells of different size and shape, and ethanol in a periodic box."""
    small = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    small.rattle(0.05, seed=1)
    sheared = bulk("Cu", "fcc", a=3.65).repeat((3, 2, 2))
    sheared.set_cell(sheared.cell.array + np.array([[0, 0, 0], [0.4, 0, 0], [0.2, 0.3, 0]]), scale_atoms=True)
    sheared.rattle(0.05, seed=2)
    boxed = ethanol()
    boxed.set_cell(np.diag([9.0, 9.5, 10.0]))
    boxed.center()
    boxed.pbc = True
    return [small, sheared, boxed]


def molecules():
    first, second = ethanol(), ethanol()
    first.rattle(0.02, seed=3)
    second.rattle(0.04, seed=4)
    return [first, second]


def assert_matches_calculator(outputs, systems, calculator, stress=True):
    """Batched ``outputs`` equal the ASE calculator's numbers for each system."""
    start = 0
    for index, atoms in enumerate(systems):
        atoms = atoms.copy()
        atoms.calc = calculator
        end = start + len(atoms)
        expected = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        got = {"energy": outputs["energy"][index], "forces": outputs["forces"][start:end]}
        if stress:
            expected["stress"] = atoms.get_stress(voigt=False)
            got["stress"] = outputs["stress"][index]
        for name, value in expected.items():
            value = np.asarray(value)
            scale = max(float(np.abs(value).max()), 1e-2)
            difference = float(np.abs(got[name].detach().cpu().double().numpy() - value).max())
            assert difference <= RTOL * scale, (index, name, difference, scale)
        start = end


def test_batch_equals_the_ase_calculator(model_file):
    model = MLMDModel(model_file, device="cpu")
    systems = periodic_systems()
    state = ts.io.atoms_to_state(systems, model.device, model.dtype)
    outputs = model(state)
    assert outputs["energy"].shape == (3,) and outputs["stress"].shape == (3, 3, 3)
    assert_matches_calculator(outputs, systems, mlmd.MLMDCalculator(model_file))
    assert torch.equal(state.positions, ts.io.atoms_to_state(systems, model.device, model.dtype).positions)


def test_non_periodic_batch(model_file):
    """Isolated molecules: energies and forces as the calculator's; stress zero by convention."""
    model = MLMDModel(model_file, device="cpu")
    systems = molecules()
    outputs = model(ts.io.atoms_to_state(systems, model.device, model.dtype))
    assert_matches_calculator(outputs, systems, mlmd.MLMDCalculator(model_file), stress=False)
    assert torch.equal(outputs["stress"], torch.zeros(2, 3, 3, dtype=torch.float64))


def test_torchsim_model_validator(model_file):
    """TorchSim's own check of a ModelInterface (Si and Fe cells, batched vs one by one)."""
    from torch_sim.models.interface import validate_model_outputs

    validate_model_outputs(MLMDModel(model_file, device="cpu"), torch.device("cpu"), torch.float64)


def test_unknown_element_is_refused(model_file):
    gold = bulk("Au", "fcc", a=4.08)
    model = MLMDModel(model_file, device="cpu")
    with pytest.raises(MLMDError, match="atomic number 79"):
        model(ts.io.atoms_to_state([gold], model.device, model.dtype))


def total_energies(state):
    kinetic = ts.calc_kinetic_energy(masses=state.masses, momenta=state.momenta, system_idx=state.system_idx)
    return (state.energy + kinetic).detach().cpu().double().numpy(), kinetic.detach().cpu().double().numpy()


def test_nve_conserves_energy():
    """TorchSim's velocity Verlet on the shipped ethanol model (float32), two molecules at once, 0.25 fs,
    200 steps from 300 K: total energy within 5 meV of its start (0.6 meV per atom; measured 3 meV,
    and 0.5 fs steps give 7 meV, Verlet's dt^2 law) while the kinetic energy of each molecule swings
    by more than 50 meV (ten times the bound)."""
    model = MLMDModel("ethanol", device="cpu")
    state = ts.io.atoms_to_state(molecules(), model.device, model.dtype)
    init, update = ts.nve(model=model, dt=torch.tensor(0.00025 * ts.units.MetalUnits.time),
                          kT=torch.tensor(300 * KB_EV_PER_K), seed=7)
    state = init(state)
    start, kinetic = total_energies(state)
    drift, low, high = np.zeros(2), kinetic.copy(), kinetic.copy()
    for _ in range(200):
        state = update(state)
        total, kinetic = total_energies(state)
        drift = np.maximum(drift, np.abs(total - start))
        low, high = np.minimum(low, kinetic), np.maximum(high, kinetic)
    print(f"\nNVE 200 x 0.25 fs, ethanol float32: |E - E0| max {drift.max() * 1e3:.2f} meV, "
          f"kinetic swing {(high - low).min() * 1e3:.0f} meV")
    assert (high - low).min() > 0.05
    assert drift.max() < 5e-3


def test_nvt_langevin_reaches_the_target_temperature():
    """TorchSim's Langevin (BAOAB) integrator heats eight ethanol molecules (shipped model, float32) from
    10 K to 500 K (0.5 fs, friction 1/5 fs): the mean temperature of steps 100-200 is within 10 % of
    the target (measured 487-512 K over four seeds: the mean of 8 x 27 degrees of freedom over ~10
    decorrelated samples spreads by about 3 %), after the first step was still below 250 K."""
    model = MLMDModel("ethanol", device="cpu")
    systems = []
    for seed in range(8):
        atoms = ethanol()
        atoms.rattle(0.02, seed=seed)
        systems.append(atoms)
    state = ts.io.atoms_to_state(systems, model.device, model.dtype)
    dt = torch.tensor(0.0005 * ts.units.MetalUnits.time)
    target = torch.tensor(500 * KB_EV_PER_K)
    temperatures = []
    with torch.random.fork_rng():  # TorchSim draws the Langevin noise from torch's global generator
        torch.manual_seed(0)
        init, update = ts.nvt_langevin(model=model, dt=dt, kT=target, gamma=1 / (10 * dt), seed=0)
        state = init(state, kT=torch.tensor(10 * KB_EV_PER_K))
        for _ in range(200):
            state = update(state, kT=target)
            temperatures.append(ts.quantities.calc_temperature(masses=state.masses, momenta=state.momenta,
                                                               system_idx=state.system_idx).mean().item())
    mean = float(np.mean(temperatures[100:]))
    print(f"\nNVT Langevin, 8 ethanol, 500 K target: first step {temperatures[0]:.0f} K, steps 100-200 {mean:.0f} K")
    assert temperatures[0] < 250
    assert abs(mean - 500) < 0.10 * 500


def test_metatomic_export_in_torchsim(model_file, tmp_path):
    """TorchSim's MetatomicModel on the metatomic export equals the adapter on the periodic batch."""
    pytest.importorskip("metatomic.torch")
    from mlmd.training.export import export

    path = export(model_file, tmp_path / "spline-mta.pt", format="metatomic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch_sim warns that metatrain (for .ckpt files) is missing
        from torch_sim.models.metatomic import MetatomicModel
    engine = MetatomicModel(str(path), device="cpu")
    systems = periodic_systems()
    outputs = engine(ts.io.atoms_to_state(systems, engine.device, engine.dtype))
    assert_matches_calculator(outputs, systems, mlmd.MLMDCalculator(model_file))
