"""The ``transformer`` family and the ``symmetry`` objective (plain, augment, learned equivariance).

The conformance suite runs on a model trained briefly with the learned-equivariance objective (its
rotational symmetry is learned, so an untrained model has none to test); its rotation test uses the
bounds the family states (``learned_rotation_rtol``), and a model trained as long without rotations
misses them. Everything else in the suite (finite differences, batching, translation and permutation,
periodic images, the cutoff, TorchScript and the model file) holds exactly, as for every family.
Rotation errors are checked against analytic values, the bound after short training against a
plain-trained control, and the three modes run through ``mlmd train``.
"""

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

import mlmd
from engine_conformance import MLMDModelConformance
from mlmd.data import Dataset
from mlmd.errors import MLMDError
from mlmd.model import export_model
from mlmd.train import export_checkpoint, load_checkpoint, train
from mlmd.training.models import default_dtype, model_from_dataset
from mlmd.training.objectives.symmetry import (SYMMETRY_MODES, contrastive_logits, info_nce,
                                              run_with_latents)
from potentials import FAMILIES
from potentials.base import Potential
from potentials.symmetry import (random_rotations, rotate_batch, rotation_error_sums, rotation_errors,
                                summarize_rotation_errors)
from potentials.testing import SYSTEMS, relabel
from potentials.transformer import LEARNED_FORCE_ROTATION_BOUND, LEARNED_ROTATION_RTOL

SPECIES = [1, 6, 8, 29]
SMALL = dict(cutoff=4.5, channels=16, num_heads=2, num_layers=2, transform_hidden=16)


def labelled(frames):
    """``frames`` with EMT energies and forces (and stress where periodic) stored as fixed labels."""
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        out.append(atoms)
    return out


def rattled(atoms, count: int, amount: float, seed: int):
    copies = []
    for k in range(count):
        copy = atoms.copy()
        copy.rattle(amount, seed=seed + k)
        copies.append(copy)
    return copies


def suite_frames():
    """The suite systems the rotation test uses, two copies each rattled by 0.01 Å, EMT labels, one orientation."""
    frames = []
    for index, name in enumerate(("molecule", "cluster", "copper")):
        frames += rattled(relabel(SYSTEMS[name](), SPECIES), 2, 0.01, 100 * index)
    return labelled(frames)


def ethanol_frames(count: int, seed: int):
    """Ethanol rattled by 0.1 Å, EMT labels, all in one orientation (a plain fit never sees another)."""
    return labelled(rattled(molecule("CH3CH2OH"), count, 0.1, seed))


def fit(frames, mode: str, steps: int, seed: int = 0, batch_size: int = 8, lr: float = 5e-3, **model):
    """A float64 ``transformer`` trained ``steps`` Adam steps (cosine lr) with ``SYMMETRY_MODES[mode]``."""
    dataset = Dataset(frames)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with default_dtype(torch.float64):
            net, _ = model_from_dataset({"family": "transformer", **SMALL, **model}, dataset, range(len(dataset)))
        objective = SimpleNamespace(use_stress=False, weights={"energy": 1.0, "force": 10.0, "stress": 0.0},
                                    settings={"reflections": True, "contrastive_weight": 0.1,
                                              "contrastive_temperature": 0.1})
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            batch = dataset.collate(rng.choice(len(dataset), batch_size, replace=False).tolist(), dtype=torch.float64)
            loss = SYMMETRY_MODES[mode].loss(objective, net, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.eval()


class TestTransformerConformance(MLMDModelConformance):
    """The suite on a model trained 200 steps with the learned-equivariance objective (about 10 s)."""

    species = SPECIES

    def make_model(self):
        return fit(suite_frames(), "learned", 200, batch_size=6, lr=8e-3)

    def reference_energies(self, model):
        """A lone atom has exactly ``atomic_energies_ref[z] + shift`` (the lone-atom readout is subtracted)."""
        return {z: float(e) + model.shift for z, e in zip(model.species, model.atomic_energies_ref)}


def test_the_stated_rotation_bound_is_missed_without_rotations():
    """The same model and steps without rotations (``plain``) fails the suite's rotation test under the
    family's stated bounds: the bounds measure learned symmetry, not a property of any weights."""
    plain = fit(suite_frames(), "plain", 200, batch_size=6, lr=8e-3)
    suite = TestTransformerConformance()
    failures = 0
    for name in ("molecule", "cluster", "copper"):
        for proper in (True, False):
            try:
                suite.test_rotation_and_reflection(plain, torch.float64, name, proper)
            except AssertionError:
                failures += 1
    assert failures > 0
    assert suite.rotation_tolerances(plain, torch.float64)["forces"] == LEARNED_ROTATION_RTOL["forces"]


# ----------------------------------------------------------------------------- the rotation error itself

class FieldPotential(Potential):
    """``E = -q sum_i e . r_i`` in a uniform field ``e`` (not rotation invariant): ``F_i = q e`` exactly."""

    def __init__(self, field):
        super().__init__([1, 29], 3.0)
        self.register_buffer("field", torch.tensor(field, dtype=torch.float64))

    def atomic_energies(self, positions, species, edge_index, edge_vectors, batch):
        return -(positions * self.field).sum(dim=1)


def two_structures():
    atoms = [relabel(SYSTEMS["copper"](), [29]), relabel(SYSTEMS["molecule"](), [1, 29])]
    return Dataset(labelled(atoms)).collate([0, 1], dtype=torch.float64)


def test_rotation_error_sums_equal_their_analytic_values():
    """For the field potential, ``E(Rx) - E(x) = -e . (R - I) sum_i r_i`` and ``F(Rx) - R F(x) = e - R e``."""
    field = np.array([0.3, -0.2, 0.5])
    model = FieldPotential(field).double().eval()
    batch = two_structures()
    rotations = random_rotations(2, generator=torch.Generator().manual_seed(3))
    sums = rotation_error_sums(model, batch, rotations)
    energy, force, scale = 0.0, 0.0, 0.0
    for b in range(2):
        mask = (batch["batch"] == b).numpy()
        positions, rotation = batch["positions"].numpy()[mask], rotations[b].numpy()
        energy += abs(-field @ (rotation - np.eye(3)) @ positions.sum(axis=0)) / mask.sum()
        force += mask.sum() * np.abs(field - rotation @ field).sum()
        scale += mask.sum() * np.abs(field).sum()
    n_atoms = len(batch["batch"])
    assert float(sums["structures"]) == 2 and float(sums["force_components"]) == 3 * n_atoms
    assert float(sums["energy_abs"]) == pytest.approx(energy, rel=1e-10)
    assert float(sums["force_abs"]) == pytest.approx(force, rel=1e-10)
    assert float(sums["force_scale"]) == pytest.approx(scale, rel=1e-10)
    assert force > 0.1 * scale  # the rotation matters


def test_rotation_error_of_an_equivariant_model_is_roundoff():
    torch.manual_seed(0)
    model = FAMILIES["equivariant"]([1, 6, 8, 29], cutoff=4.0, channels=8).double().eval()
    errors = rotation_errors(model, two_structures(), 3, proper=False, generator=torch.Generator().manual_seed(1))
    assert errors["energy_meV_per_atom"] < 1e-9 and errors["force_relative"] < 1e-10


def test_rotated_batch_carries_the_labels_of_the_rotated_structure():
    """``rotate_batch`` turns positions, cell, forces and stress into those EMT gives the rotated structure."""
    frames = labelled([relabel(SYSTEMS["copper"](), [29]), relabel(SYSTEMS["molecule"](), [1, 6, 8])])
    batch = Dataset(frames).collate([0, 1], dtype=torch.float64)
    rotations = random_rotations(2, proper=False, generator=torch.Generator().manual_seed(4))
    rotated = rotate_batch(batch, rotations)
    turned = []
    for b, atoms in enumerate(frames):
        copy = atoms.copy()
        copy.positions = atoms.positions @ rotations[b].numpy().T
        copy.set_cell(atoms.cell.array @ rotations[b].numpy().T)
        turned.append(copy)
    expected = Dataset(labelled(turned)).collate([0, 1], dtype=torch.float64)
    for key in ("positions", "cell", "forces", "stress"):
        assert torch.allclose(rotated[key], expected[key], atol=1e-9), key


# ----------------------------------------------------------------------------- learning the symmetry

@pytest.fixture(scope="module")
def ethanol_models():
    """Learned-equivariance and plain fits of 40 rattled ethanols, 400 steps each (about 25 s)."""
    frames = ethanol_frames(40, 0)
    return {mode: fit(frames, mode, 400) for mode in ("learned", "plain")}


@pytest.mark.slow
def test_learned_equivariance_reaches_its_bound_on_held_out_frames(ethanol_models):
    """Force rotation error (mean |F(Rx) - R F(x)| over mean |F|, rotations and reflections) on held-out
    frames: within LEARNED_FORCE_ROTATION_BOUND after learned training, beyond it after plain training."""
    held_out = Dataset(ethanol_frames(12, 1000)).collate(list(range(12)), dtype=torch.float64)
    errors = {mode: rotation_errors(model, held_out, 8, proper=False, generator=torch.Generator().manual_seed(5))
              for mode, model in ethanol_models.items()}
    assert errors["learned"]["force_relative"] < LEARNED_FORCE_ROTATION_BOUND
    assert errors["plain"]["force_relative"] > LEARNED_FORCE_ROTATION_BOUND
    assert errors["learned"]["energy_meV_per_atom"] < errors["plain"]["energy_meV_per_atom"]


@pytest.mark.slow
def test_contrastive_loss_tells_rotated_copies_from_other_configurations(ethanol_models):
    """After learned training, ``T(z, R)`` is closer to the latent of the same configuration rotated than to
    those of other configurations, on held-out frames: InfoNCE below chance (log B), at which the plain fit
    (whose transformation network never trained) stays. Measured: 2.25 against chance 2.49 (plain 2.47), mean
    positive logit 0.68 against 0.37 for the negatives (the rattled ethanols differ by 0.1 Å only)."""
    held_out = Dataset(ethanol_frames(12, 2000)).collate(list(range(12)), dtype=torch.float64)
    rotations = random_rotations(12, proper=False, generator=torch.Generator().manual_seed(6))
    rotated = rotate_batch(held_out, rotations)
    with torch.no_grad():
        logits = contrastive_logits(ethanol_models["learned"], held_out, rotated, rotations, 0.1)
        plain = info_nce(contrastive_logits(ethanol_models["plain"], held_out, rotated, rotations, 0.1))
    chance = math.log(12)
    positives = logits.diagonal().mean()
    negatives = (logits.sum() - logits.diagonal().sum()) / (12 * 11)
    assert float(positives) > float(negatives) + 0.1
    assert float(info_nce(logits)) < chance - 0.15
    assert abs(float(plain) - chance) < 0.1


def test_latents_of_the_energy_pass_are_the_models_latents():
    """The learned mode reads the latent from the energy pass (a hook); it equals ``model.latents`` and carries
    gradients to the parameters."""
    torch.manual_seed(0)
    model = FAMILIES["transformer"](SPECIES, **SMALL).double().train()
    frames = labelled([relabel(SYSTEMS[name](), SPECIES) for name in ("molecule", "copper")])
    batch = Dataset(frames).collate([0, 1], dtype=torch.float64)
    out, latents = run_with_latents(model, batch, False)
    direct = model.latents(batch["positions"], batch["atomic_numbers"], batch["cell"], batch["pbc"], batch["batch"])
    assert latents.shape == (len(batch["batch"]), 16) and torch.allclose(latents, direct, atol=1e-12)
    assert out["forces"].shape == (len(batch["batch"]), 3)
    (gradient,) = torch.autograd.grad(latents.sum(), [model.embedding.weight])
    assert float(gradient.abs().max()) > 0


# ----------------------------------------------------------------------------- mlmd train, export, load_model

@pytest.fixture(scope="module")
def ethanol_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ethanol.xyz"
    write(path, ethanol_frames(24, 0), format="extxyz")
    return path


def config(data, directory, symmetry, **training):
    return {"data": {"path": str(data), "batch_size": 4, "validation_fraction": 0.25, "test_fraction": 0.0},
            "model": {"family": "transformer", **SMALL},
            "training": {"epochs": 2, "lr": 0.003, "dtype": "float64", "device": "cpu", "seed": 1,
                         "symmetry": symmetry, **training},
            "output": {"directory": str(directory)}}


@pytest.mark.parametrize("symmetry", ["plain", "augment", "learned"])
def test_each_mode_trains_through_mlmd_train_and_exports_its_rotation_error(ethanol_file, tmp_path, symmetry):
    """Two epochs of each mode; the rotation error measured on the validation frames goes into best.pt, the
    exported file's metadata and ``mlmd.load_model(...).equivariance_error``, and matches a fresh measurement
    of the exported model on those frames (same rotations)."""
    result = train(config(ethanol_file, tmp_path / "run", symmetry), verbose=False, progress=False)
    assert len(result.history) == 2 and all(math.isfinite(row["val_loss"]) for row in result.history)
    stored = load_checkpoint(result.best_checkpoint)["model_config"]["equivariance_error"]
    model = mlmd.load_model(export_checkpoint(result.best_checkpoint, tmp_path / "model.pt"))
    assert model.metadata["symmetry"] == "learned"
    assert model.equivariance_error == stored
    assert stored["frames"] == 6 and stored["rotations"] == 4
    # Recompute on the exported file with the objective's rotations: a generator seeded training.seed + 1,
    # 4 per batch of the validation frames (batches of data.batch_size).
    dataset = Dataset.from_file(ethanol_file)
    generator = torch.Generator().manual_seed(2)
    totals = {}
    for batch in dataset.batches(dataset.split(0.25, 0.0, 0).validation, 4, dtype=torch.float64):
        for _ in range(4):
            rotations = random_rotations(len(batch["energy"]), torch.float64, proper=False, generator=generator)
            for key, value in rotation_error_sums(model, batch, rotations).items():
                totals[key] = totals.get(key, 0.0) + float(value)
    again = summarize_rotation_errors(totals)
    for key in ("energy_meV_per_atom", "force_meV_per_A", "force_relative"):
        assert again[key] == pytest.approx(stored[key], rel=1e-6), key
    assert stored["force_relative"] > 0


def test_a_snapshot_carries_the_rotation_error_of_its_weights(ethanol_file, tmp_path):
    """A snapshot (training.snapshot_minutes) is exported like best.pt, so it carries the rotation error
    measured on its own weights; for a mark beyond the end it holds best.pt's weights, hence best.pt's error."""
    result = train(config(ethanol_file, tmp_path / "run", "learned", snapshot_minutes=[1000.0]), verbose=False,
                   progress=False)
    stored = load_checkpoint(result.best_checkpoint)["model_config"]["equivariance_error"]
    snapshot = tmp_path / "run" / "snapshot-1000min.pt"
    assert load_checkpoint(snapshot)["model_config"]["equivariance_error"] == stored
    with warnings.catch_warnings(record=True) as caught:  # a transformer file without a measured error warns
        warnings.simplefilter("always")
        model = mlmd.load_model(export_checkpoint(snapshot, tmp_path / "snapshot.pt"))
    assert not [w for w in caught if "rotation error" in str(w.message)]
    assert model.equivariance_error == stored


def test_the_modes_are_different_losses(ethanol_file, tmp_path):
    """The modes are different losses: from the same start, their first-epoch training losses differ."""
    losses = {}
    for symmetry in ("plain", "augment", "learned"):
        result = train(config(ethanol_file, tmp_path / symmetry, symmetry, epochs=1, equivariance_rotations=0),
                       verbose=False, progress=False)
        losses[symmetry] = result.history[0]["train_loss"]
        assert load_checkpoint(result.best_checkpoint)["model_config"]["equivariance_error"] is None
    assert len({round(v, 12) for v in losses.values()}) == 3


def test_config_errors_are_clear(ethanol_file, tmp_path):
    with pytest.raises(MLMDError, match="training.symmetry must be one of 'plain', 'augment', 'learned'"):
        train(config(ethanol_file, tmp_path / "a", "contrastive"), verbose=False, progress=False)
    small = config(ethanol_file, tmp_path / "b", "learned")
    small["data"]["batch_size"] = 1
    with pytest.raises(MLMDError, match="batch_size must be at least 2"):
        train(small, verbose=False, progress=False)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        FAMILIES["transformer"]([1], channels=10, num_heads=4)


def test_model_files_say_whether_their_rotation_error_was_measured(tmp_path):
    """An exported transformer without a measurement warns on loading and reports None; an exactly
    equivariant family carries no learned-symmetry metadata."""
    torch.manual_seed(0)
    model = FAMILIES["transformer"]([1, 8], **SMALL).double().eval()
    with pytest.warns(UserWarning, match="carries no measured rotation error"):
        loaded = mlmd.load_model(export_model(model, tmp_path / "t.pt"))
    assert loaded.equivariance_error is None
    model.equivariance_error = {"energy_meV_per_atom": 0.5, "force_meV_per_A": 3.0}
    assert mlmd.load_model(export_model(model, tmp_path / "u.pt")).equivariance_error == model.equivariance_error
    exact = mlmd.load_model(export_model(FAMILIES["equivariant"]([1, 8], channels=4).double(), tmp_path / "e.pt"))
    assert exact.equivariance_error is None and "symmetry" not in exact.metadata
