"""The ``forecaster`` family: the forecaster conformance suite (symmetry, batching, periodic images,
float32/float64, TorchScript), conservation laws, export/load, reference trajectories, training pairs and
``mlmd train`` on them.

Symmetry checks hold for any weights, so an untrained model is used (its prior coefficients
and scales set away from 0 and 1 so that every term contributes). Tolerances as in
:mod:`potentials.testing`: ``RTOL[dtype]`` of the largest output.
"""

import copy
import json
import math

import numpy as np
import pytest
import torch

from potentials import FAMILIES
from potentials.forecaster import ConservationLayer
from potentials.testing import (DTYPES, RTOL, SYSTEMS, ForecasterConformance, assert_close, assert_forecasts_close,
                                forecast, relabel, velocities_of)

SPECIES = [1, 6, 8, 29]
MASSES = [1.008, 12.011, 15.999, 63.546]
INTERVAL_STEPS, TIMESTEP = 20, 0.5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(**changes):
    settings = dict(species=SPECIES, masses=MASSES, cutoff=4.0, channels=8, lmax=2, num_layers=2,
                    timestep_fs=TIMESTEP, interval_steps=INTERVAL_STEPS, displacement_rms=0.1, velocity_rms=0.01,
                    displacement_scale=0.05, velocity_scale=0.008, prior_displacement=[0.3, 0.5, 0.7, 0.9],
                    prior_velocity=[-0.2, 0.1, 0.4, 0.8])
    settings.update(changes)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return FAMILIES["forecaster"](**settings)


class TestForecasterConformance(ForecasterConformance):
    """Rotation, reflection, translation, permutation, batching, supercell, float32 vs float64, TorchScript,
    a plain TorchScript file, unknown elements (mlmd's model file: ``test_export_and_load_round_trip`` below)."""

    species = SPECIES

    def make_model(self):
        return make_model()


@pytest.fixture(scope="module")
def models():
    base = make_model()
    return {dtype: copy.deepcopy(base).to(dtype).eval() for dtype in DTYPES}


@pytest.fixture(params=DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def dtype(request):
    return request.param


@pytest.fixture
def model(models, dtype):
    return models[dtype]


def system(name):
    return relabel(SYSTEMS[name](), SPECIES)


# ----------------------------------------------------------------------------- conservation


def _moments(model, atoms, positions, velocities):
    """Masses as the model holds them (its float32-built buffer differs from MASSES by rounding)."""
    m = model.masses.double().numpy()[[SPECIES.index(z) for z in atoms.numbers]][:, None]
    centre = (m * positions).sum(0) / m.sum()
    return m, (m * velocities).sum(0), (m * np.cross(positions - centre, velocities)).sum(0)


@pytest.mark.parametrize("name", ["molecule", "cluster", "crystal", "slab"])
def test_conservation_identities(models, name):
    """sum m v' = sum m v; sum m d / M = P tau / M; for isolated systems L(t + tau) = L(t)."""
    model = models[torch.float64]
    atoms = system(name)
    v = velocities_of(atoms)
    out = forecast(model, [atoms], [v], torch.float64)
    m, momentum, angular = _moments(model, atoms, atoms.positions, v)
    _, new_momentum, new_angular = _moments(model, atoms, atoms.positions + out["displacement"], out["velocities"])
    scale = np.abs(m * v).sum()
    assert np.abs(momentum).max() > 1e-3  # the test needs a net momentum
    assert_close(new_momentum, momentum, 1e-12, "momentum", scale)
    assert_close((m * out["displacement"]).sum(0) / m.sum(), momentum / m.sum() * model.interval_fs, 1e-12,
                 "centre-of-mass displacement", np.abs(out["displacement"]).max())
    if not atoms.pbc.any():
        assert_close(new_angular, angular, 1e-10, "angular momentum", np.abs(angular).max())
    # without the layer none of this holds (so the test can fail)
    free = copy.deepcopy(model)
    free.conserve = False
    raw = forecast(free, [atoms], [v], torch.float64)
    assert np.abs((m * raw["velocities"]).sum(0) - momentum).max() > 1e-6 * scale


def test_conservation_layer_on_degenerate_systems():
    """A single atom and a linear molecule (singular inertia tensors) stay finite and keep momentum; the
    linear molecule keeps the angular momentum components that velocities can change."""
    layer = ConservationLayer()
    rng = np.random.default_rng(1)
    positions = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 4.1], [1.0, 2.0, 5.3]],
                             dtype=torch.float64)
    batch = torch.tensor([0, 1, 1, 1])
    masses = torch.tensor([4.0, 12.0, 1.0, 16.0], dtype=torch.float64)
    velocities = torch.tensor(rng.normal(size=(4, 3)), dtype=torch.float64)
    velocities[1:, :2] = 0.0  # rotation about the axis is impossible
    velocities[1:, 0] = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    d, v = layer(torch.tensor(rng.normal(size=(4, 3))), torch.tensor(rng.normal(size=(4, 3))), positions, velocities,
                 masses, batch, torch.zeros(2, 3, dtype=torch.bool), 10.0)
    assert torch.isfinite(d).all() and torch.isfinite(v).all()
    m = masses.unsqueeze(1)
    for b in (0, 1):
        sel = batch == b
        torch.testing.assert_close((m[sel] * v[sel]).sum(0), (m[sel] * velocities[sel]).sum(0))
        torch.testing.assert_close((m[sel] * d[sel]).sum(0), 10.0 * (m[sel] * velocities[sel]).sum(0))
    sel = batch == 1

    def angular(x, u):
        centre = (m[sel] * x).sum(0) / m[sel].sum()
        return (m[sel] * torch.linalg.cross(x - centre, u)).sum(0)

    before, after = angular(positions[sel], velocities[sel]), angular(positions[sel] + d[sel], v[sel])
    axis = (positions[3] + d[3]) - (positions[1] + d[1])
    axis = axis / axis.norm()
    perpendicular = lambda vec: vec - (vec @ axis) * axis
    # the rotated molecule is no longer exactly linear, so compare in its plane perpendicular to the axis
    torch.testing.assert_close(perpendicular(after), perpendicular(before), atol=1e-3 * before.norm(), rtol=0)


# ----------------------------------------------------------------------------- TorchScript, export, errors


def test_export_and_load_round_trip(model, dtype, tmp_path):
    import mlmd
    from mlmd.errors import MLMDError
    from mlmd.model import export_model

    loaded = mlmd.load_model(export_model(model, tmp_path / "forecaster.pt", training_data_hash="h"))
    assert loaded.family == "forecaster" and loaded.is_forecaster
    assert loaded.species == SPECIES and loaded.cutoff == pytest.approx(4.0) and loaded.dtype == dtype
    assert loaded.interval_fs == pytest.approx(INTERVAL_STEPS * TIMESTEP)
    metadata = loaded.metadata
    assert metadata["timestep_fs"] == TIMESTEP and metadata["interval_steps"] == INTERVAL_STEPS
    assert metadata["normalization"]["displacement_rms_A"] == pytest.approx(0.1)
    assert metadata["normalization"]["velocity_rms_A_per_fs"] == pytest.approx(0.01)
    assert metadata["config"]["masses"] == MASSES
    systems = [system("cluster"), system("crystal")]
    velocities = [velocities_of(a, seed=k) for k, a in enumerate(systems)]
    assert_forecasts_close(forecast(loaded.forecast, systems, velocities, dtype),
                           forecast(model, systems, velocities, dtype), RTOL[dtype], "exported vs eager")
    atoms = systems[0]
    args = (torch.tensor(atoms.positions), torch.tensor(atoms.numbers), torch.zeros(1, 3, 3),
            torch.zeros(1, 3, dtype=torch.bool), torch.zeros(len(atoms), dtype=torch.int64))
    with pytest.raises(MLMDError, match="is a trajectory forecaster .* not a potential"):
        loaded(*args)


def test_a_potential_has_no_forecast(tmp_path):
    import mlmd
    from mlmd.errors import MLMDError
    from mlmd.model import export_model
    from reference_potentials import LennardJonesPotential

    potential = mlmd.load_model(export_model(LennardJonesPotential([1, 6, 8], 2.3, 0.2, 5.0).double(),
                                             tmp_path / "lj.pt"))
    assert potential.interval_fs is None and not potential.is_forecaster
    atoms = system("molecule")
    with pytest.raises(MLMDError, match="is a potential .* not a trajectory forecaster"):
        potential.forecast(torch.tensor(atoms.positions), torch.tensor(atoms.numbers), torch.zeros(1, 3, 3),
                           torch.zeros(1, 3, dtype=torch.bool), torch.zeros(len(atoms), dtype=torch.int64),
                           torch.zeros(len(atoms), 3))


def test_config_round_trip_and_bad_arguments():
    model = make_model()
    rebuilt = FAMILIES["forecaster"].from_config(json.loads(json.dumps(model.config())))
    assert rebuilt.config() == model.config()
    with pytest.raises(ValueError, match="masses"):
        FAMILIES["forecaster"](SPECIES)
    with pytest.raises(ValueError, match="masses has 1 values"):
        FAMILIES["forecaster"](SPECIES, masses=[1.0])


# ----------------------------------------------------------------------------- trajectories and training


@pytest.fixture(scope="module")
def copper_runs(tmp_path_factory):
    """Three short EMT copper runs (32 atoms, 2 fs steps, every 2nd step recorded)."""
    from mlmd.generate import generate_trajectories

    folder = tmp_path_factory.mktemp("cu-runs")
    generate_trajectories("cu", folder, runs=3, steps=80, stride=2, equilibration_steps=10, temperature_K=600,
                          progress=False)
    return folder


def test_trajectory_files(copper_runs, tmp_path):
    """Unwrapped positions and velocities agree with finite differences; zero momentum; xyz = h5."""
    from mlmd.generate import generate_trajectories
    from mlmd.trajectories import read_trajectory

    run = read_trajectory(copper_runs / "run-000.h5")
    assert run.positions.shape == (41, 32, 3) and run.stride == 2 and run.timestep_fs == 2.0
    assert run.settings["thermostat"] == "csvr" and run.pbc.all()
    h = run.frame_interval_fs
    central = (run.positions[2:] - run.positions[:-2]) / (2 * h)
    assert np.abs(central - run.velocities[1:-1]).max() < 0.05 * np.abs(run.velocities).max()
    momentum = (run.masses[None, :, None] * run.velocities).sum(axis=1)
    assert np.abs(momentum).max() < 1e-10
    other = read_trajectory(generate_trajectories("cu", tmp_path, runs=1, steps=10, stride=2, equilibration_steps=10,
                                                  temperature_K=600, fmt="xyz", progress=False)[0])
    np.testing.assert_allclose(other.positions, run.positions[:6], atol=1e-6)
    np.testing.assert_allclose(other.velocities, run.velocities[:6], atol=1e-6)


def test_training_pairs_and_time_reversal(copper_runs):
    from mlmd.trajectories import TrajectoryDataset

    data = TrajectoryDataset.from_files(copper_runs, interval_steps=10, rollout_steps=2, pair_stride=3)
    run = data.runs[0]
    assert data.interval_fs == 20.0
    split = data.split_by_run(validation_runs=1, test_runs=1)
    assert set(data.pairs[split.train, 0]) == {0} and set(data.pairs[split.test, 0]) == {2}
    index = int(split.train[1])
    start = int(data.pairs[index, 1])
    assert start == 3
    forward = data.collate([index], torch.float64)
    np.testing.assert_array_equal(forward["positions"].numpy(), run.positions[start])
    np.testing.assert_array_equal(forward["target_positions"].numpy(), run.positions[[start + 5, start + 10]])
    backward = data.collate([index], torch.float64, reverse=[True])
    np.testing.assert_array_equal(backward["positions"].numpy(), run.positions[start + 10])
    np.testing.assert_array_equal(backward["velocities"].numpy(), -run.velocities[start + 10])
    np.testing.assert_array_equal(backward["target_velocities"].numpy(), -run.velocities[[start + 5, start]])
    stats = data.statistics(split.train, cutoff=4.0)
    assert stats["species"] == [29] and stats["masses"] == [pytest.approx(63.546)]
    assert 0 < stats["displacement_scale"] < stats["displacement_rms"]  # the fitted prior explains part of d


def test_train_export_and_resume(copper_runs, tmp_path):
    """`mlmd train` with the forecaster family (rollout loss, time reversal), `mlmd export`, load, forecast;
    a resumed run ends bitwise where an uninterrupted one does."""
    import mlmd
    from mlmd.cli import main as mlmd_main
    from mlmd.trajectories import TrajectoryDataset
    from mlmd.train import load_checkpoint, train

    def config(directory, epochs):
        return {
            "data": {"path": str(copper_runs), "interval_steps": 10, "pair_stride": 4, "validation_runs": 1,
                     "test_runs": 1, "batch_size": 4},
            "model": {"family": "forecaster", "cutoff": 3.0, "channels": 4, "lmax": 1, "num_layers": 1,
                      "num_basis": 4, "radial_hidden": 8},
            "training": {"epochs": epochs, "lr": 0.01, "rollout_steps": 2, "time_reversal": True, "seed": 3,
                         "dtype": "float64", "device": "cpu", "num_threads": 1},
            "output": {"directory": str(directory)},
        }

    straight = train(config(tmp_path / "straight", 3), verbose=False, progress=False)
    assert all(math.isfinite(row["val_loss"]) for row in straight.history)
    assert straight.history[-1]["train_loss"] < straight.history[0]["train_loss"]
    assert straight.test_metrics["displacement_rmse_A"] > 0
    header = (tmp_path / "straight" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,lr,train_loss,val_loss,val_displacement_rmse_A")
    train(config(tmp_path / "resumed", 2), verbose=False, progress=False)
    train(config(tmp_path / "resumed", 3), resume=True, verbose=False, progress=False)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    for part in ("model", "ema"):
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)

    assert mlmd_main(["export", str(straight.checkpoint), "-o", str(tmp_path / "cu.pt")]) == 0
    model = mlmd.load_model(tmp_path / "cu.pt")
    assert model.interval_fs == pytest.approx(20.0) and model.species == [29]
    data = TrajectoryDataset.from_files(copper_runs, interval_steps=10)
    batch = data.collate([0, 1], torch.float64)
    args = [batch[k] for k in ("positions", "atomic_numbers", "cell", "pbc", "batch", "velocities")]
    expected = straight.ema_model(*args)
    for key, value in model.forecast(*args).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-12, atol=1e-12)


def test_trajectory_config_errors(copper_runs, tmp_path):
    from mlmd.errors import MLMDError
    from mlmd.train import train

    base = {"data": {"path": str(copper_runs), "interval_steps": 10, "validation_runs": 1},
            "model": {"family": "forecaster", "cutoff": 3.0, "channels": 4, "lmax": 1, "num_layers": 1},
            "training": {"epochs": 1, "device": "cpu"}, "output": {"directory": str(tmp_path / "run")}}
    for change, message in [
        (lambda c: c["data"].update(interval_steps=3), "not a multiple of the stride"),
        (lambda c: c["data"].update(validation_runs=3), "leaves none of the 3 runs"),
        (lambda c: c["training"].update(energy_weight=1.0), "unknown key training.energy_weight"),
        (lambda c: c["model"].update(interval_steps=10), "model.interval_steps comes from the trajectories"),
        (lambda c: c["data"].update(path=str(tmp_path / "none")), "no trajectory files"),
    ]:
        config = json.loads(json.dumps(base))
        change(config)
        with pytest.raises(MLMDError, match=message):
            train(config, verbose=False, progress=False)
    assert not (tmp_path / "run").exists()
