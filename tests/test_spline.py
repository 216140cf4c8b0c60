"""The ``spline`` family (UF3-style B-spline potential): conformance, basis, exact and EMT fits, trainer, export."""

import time

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write

from engine_conformance import MLMDModelConformance
from potentials import FAMILIES
from potentials.blocks.bsplines import dense_basis, local_basis
from potentials.spline import SplinePotential

# A small model with all knots populated by the conformance systems (distances >= 1 Å).
SMALL = dict(cutoff=5.0, cutoff_3body=3.5, r_min=0.8, r_min_3body=0.8, n_intervals=8, n_intervals_3body=4)


def randomise(model: SplinePotential, scale: float = 0.1) -> SplinePotential:
    """Random coefficients (eV) in every free slot, so symmetry and cutoff tests can fail."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, dtype=parameter.dtype))
    return model


class TestSplineConformance(MLMDModelConformance):
    species = [1, 6, 8, 29]

    def reference_energies(self, model):
        """A lone atom has only the one-body term ``e1[z]`` (random here, like every coefficient)."""
        return dict(zip(model.species, model.one_body.tolist()))

    def make_model(self):
        return randomise(FAMILIES["spline"](self.species, **SMALL))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def collate(frames, model=None):
    """Frames as one batch of the model contract; labels from ``model`` when given (float64)."""
    batch = {
        "positions": torch.tensor(np.concatenate([a.positions for a in frames])),
        "atomic_numbers": torch.tensor(np.concatenate([a.numbers for a in frames])),
        "cell": torch.tensor(np.stack([a.cell.array for a in frames])),
        "pbc": torch.tensor(np.stack([a.pbc for a in frames])),
        "batch": torch.repeat_interleave(torch.arange(len(frames)), torch.tensor([len(a) for a in frames])),
        "n_atoms": torch.tensor([len(a) for a in frames]),
    }
    if model is not None:
        out = model(batch["positions"], batch["atomic_numbers"], batch["cell"], batch["pbc"], batch["batch"])
        batch["energy"], batch["forces"] = out["energy"].detach(), out["forces"].detach()
    return batch


def random_structure(seed: int, species=(13, 29), min_distance: float = 1.6) -> Atoms:
    """8-13 atoms in a random triclinic periodic cell at 0.08 atoms/Å³, all image distances > ``min_distance``."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 14))
    cell = np.eye(3) * (n / 0.08) ** (1 / 3) @ (np.eye(3) + 0.1 * rng.normal(size=(3, 3)))
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) @ cell
    points = []
    while len(points) < n:
        trial = rng.random(3) @ cell
        if all(np.linalg.norm(trial - p + images, axis=1).min() > min_distance for p in points):
            points.append(trial)
    return Atoms(numbers=rng.choice(species, size=n), positions=points, cell=cell, pbc=True)


# ----------------------------------------------------------------------------- basis

def test_basis_is_a_partition_of_unity_with_exact_derivatives():
    """On [r_min, r_cut]: B_p >= 0, sum_p B_p = 1, sum_p B_p' = 0, and B' equals the central difference."""
    start, spacing, n_intervals = 1.5, 0.2, 20
    x = torch.linspace(start, start + n_intervals * spacing, 2001, dtype=torch.float64)
    basis = dense_basis(x, start, spacing, n_intervals)
    assert basis.shape == (2001, n_intervals + 3)
    assert float(basis.min()) >= 0.0
    assert torch.allclose(basis.sum(1), torch.ones_like(x), atol=1e-14)
    _, _, slopes = local_basis(x, start, spacing, n_intervals)
    assert float(slopes.sum(1).abs().max()) < 1e-12
    h = 1e-6
    inner = x[1:-1]
    numeric = (dense_basis(inner + h, start, spacing, n_intervals)
               - dense_basis(inner - h, start, spacing, n_intervals)) / (2 * h)
    first, _, slopes = local_basis(inner, start, spacing, n_intervals)
    analytic = torch.zeros_like(numeric).scatter_add(1, first.unsqueeze(-1) + torch.arange(4), slopes)
    assert torch.allclose(numeric, analytic, atol=1e-7)


def test_pair_energy_vanishes_as_the_cube_at_the_cutoff():
    """Three trailing zero coefficients: V2(r_c - d) ~ d^3 (C2), and below r_min it continues linearly."""
    model = randomise(SplinePotential([29], cutoff=5.0, cutoff_3body=0.0, r_min=2.0, n_intervals=6)).double()

    def energy(r):
        batch = collate([Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]])])
        out = model(*[batch[k] for k in ("positions", "atomic_numbers", "cell", "pbc", "batch")])
        return float(out["energy"][0].detach() - 2 * model.one_body[0].detach())

    ratios = [energy(5.0 - d) / d ** 3 for d in (1e-2, 5e-3, 2.5e-3)]
    assert ratios[0] != 0 and np.allclose(ratios, ratios[0], rtol=2e-2)
    below = [energy(r) for r in (1.0, 1.5, 2.0)]  # linear continuation: equal steps
    assert below[1] - below[0] == pytest.approx(below[2] - below[1], rel=1e-9)


def test_design_matrix_reproduces_the_model():
    """``features @ c`` equals the model's energies and autograd forces, all channels and a periodic cell."""
    model = randomise(SplinePotential([1, 6, 8, 29], **SMALL)).double()
    frames = [random_structure(s, species=(1, 6, 8, 29), min_distance=1.0) for s in range(3)]
    batch = collate(frames, model)
    energy, forces = model.features(batch)
    vector = model.coefficient_vector()
    assert torch.allclose(energy @ vector, batch["energy"], rtol=1e-12, atol=1e-10)
    assert torch.allclose(forces @ vector, batch["forces"].reshape(-1), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- fits

@pytest.mark.parametrize("cutoff_3body", [0.0, 3.5], ids=["two-body", "three-body"])
def test_fit_recovers_a_known_spline_potential(cutoff_3body):
    """Labels from random coefficients; the fit (no curvature, ridge 1e-12) recovers them.

    Two-body and one-body coefficients are all determined and must match to 1e-6 eV.
    Three-body coefficients whose support barely meets the triangle inequality
    |r_ij - r_ik| <= r_jk <= r_ij + r_ik are weakly determined by any data, so there
    the test asks the fitted function to match: energies and forces of unseen
    structures to 1e-6 of the force scale.
    """
    torch.manual_seed(1)
    settings = dict(cutoff=5.0, cutoff_3body=cutoff_3body, r_min=1.5, r_min_3body=1.5, n_intervals=10,
                    n_intervals_3body=3)
    truth = randomise(SplinePotential([13, 29], **settings)).double()
    frames = [random_structure(seed) for seed in range(80)]
    batches = [collate(frames[i:i + 10], truth) for i in range(0, len(frames), 10)]
    fitted = SplinePotential([13, 29], **settings).double()
    stats = fitted.fit_linear(batches, ridge=1e-12, curvature=0.0)
    assert stats["force_rmse_eV_per_A"] < 1e-6
    n_exact = 2 + 3 * (settings["n_intervals"] + 3)  # one-body and pair coefficients
    error = (fitted.coefficient_vector() - truth.coefficient_vector())[:n_exact].abs().max()
    assert float(error) < 1e-6
    test = collate([random_structure(1000 + seed) for seed in range(4)], truth)
    out = fitted.eval()(test["positions"], test["atomic_numbers"], test["cell"], test["pbc"], test["batch"])
    scale = float(test["forces"].abs().max())
    assert float((out["forces"] - test["forces"]).abs().max()) < 1e-6 * scale
    assert float(((out["energy"] - test["energy"]) / test["n_atoms"]).abs().max()) < 1e-6 * scale


@pytest.fixture(scope="module")
def copper_dataset():
    """40 EMT copper frames (bulk, surface, vacancy; MD and displaced) from ``mlmd generate``."""
    from mlmd.data import Dataset
    from mlmd.generate import generate

    return Dataset(generate("cu", frames=40, progress=False))


def test_fit_on_emt_copper(copper_dataset):
    """A fit on 30 frames (2-body 5.5 Å, 3-body 3.5 Å) in seconds; force MAE on 10 unseen frames < 30 meV/Å.

    Measured: ~10 meV/Å in ~2 s on one loaded core (mean |F| 0.40 eV/Å; a 2-body-only
    fit gives ~25 meV/Å). The bound is 7.5 % of the mean force and three times the measured
    error; it fails if the force rows or the three-body term are lost.
    """
    split = copper_dataset.split(0.0, 0.25, seed=0)
    model = SplinePotential(copper_dataset.species).double()
    started = time.perf_counter()
    model.fit_linear(copper_dataset.batches(split.train.tolist(), 4, dtype=torch.float64))
    assert time.perf_counter() - started < 30.0
    model.eval()
    errors = []
    for batch in copper_dataset.batches(split.test.tolist(), 5, dtype=torch.float64):
        out = model(batch["positions"], batch["atomic_numbers"], batch["cell"], batch["pbc"], batch["batch"])
        errors.append((out["forces"] - batch["forces"]).abs().flatten())
    assert float(torch.cat(errors).mean()) < 0.030


def test_mlmd_train_fits_exports_and_loads(copper_dataset, tmp_path):
    """``mlmd train`` with family "spline" does one closed-form fit; its export loads and agrees with it."""
    import mlmd
    from mlmd.train import export_checkpoint, train

    path = tmp_path / "cu.xyz"
    write(path, copper_dataset.frames, format="extxyz")
    config = {"data": {"path": str(path), "validation_fraction": 0.15, "test_fraction": 0.15},
              "model": {"family": "spline", "cutoff": 5.5, "cutoff_3body": 3.5},
              "training": {"epochs": 50, "num_threads": 1, "device": "cpu"},
              "output": {"directory": str(tmp_path / "run"), "learning_curve": False}}
    result = train(config, verbose=False, progress=False)
    assert result.epoch == 1 and len(result.history) == 1
    assert result.test_metrics["force_mae_meV_per_A"] < 30.0
    model = mlmd.load_model(export_checkpoint(result.checkpoint, tmp_path / "spline.pt"))
    assert model.family == "spline" and model.species == [29]
    batch = copper_dataset.collate([0, 1], dtype=torch.float64)
    inputs = [batch[k] for k in ("positions", "atomic_numbers", "cell", "pbc", "batch")]
    expected = result.ema_model(*inputs, True, True)
    loaded = model(*inputs, True, True)
    for key in ("energy", "forces", "stress"):
        assert torch.allclose(loaded[key], expected[key], rtol=1e-10, atol=1e-10), key
