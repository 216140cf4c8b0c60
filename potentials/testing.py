"""Conformance suites of the model contracts, shipped with the package for families from any distribution.

:class:`ModelConformance` checks a potential (the contract of :mod:`potentials.base`),
:class:`ForecasterConformance` a trajectory forecaster (the contract of
:mod:`potentials.forecaster`). A family gets a whole suite, in float32 and float64, by
subclassing it in a pytest module::

    from potentials.testing import ModelConformance
    from potentials import FAMILIES

    class TestMyFamilyConformance(ModelConformance):
        species = [1, 6, 8, 29]          # atomic numbers the model knows
        def make_model(self):            # called once per class, under a fixed torch seed
            return FAMILIES["my_family"](self.species, cutoff=4.0)

A known model bug is recorded as ``known_failures = {"test_name": "reason"}``
(strict xfail). The reference systems (ethanol, a random cluster, rattled
triclinic copper, a random triclinic crystal, a slab, a 3-atom cell thinner
than the cutoff) are relabelled onto ``species`` for elements a family lacks.
Two hooks adapt the suite to a family: :meth:`ModelConformance.reference_energies`
(the energy of a lone atom) and ``export_and_load`` (the family's model file;
TorchScript by default). This module needs torch, numpy, ASE and pytest, nothing else.

Tolerances. Comparisons of two evaluations that are equal in exact arithmetic
(symmetry, batching, periodic images, TorchScript) use a tolerance relative to
the size of the quantity, ``RTOL[dtype] * max|reference|``:

* float32 ``1e-4``: unit roundoff is 6e-8; positions of ~10 Å carry 1e-6 Å
  of rounding, which steep repulsive walls (``r^-13``) amplify to ~1e-5 of
  the force, and sums over tens of atoms and layers add a few ulps more.
* float64 ``1e-9``: the same argument with unit roundoff 1e-16, leaving
  several decades of headroom.

Both are at least 100 times below a 1 % error (a mis-scaled force, a wrong
rotation of an l > 0 feature), so a broken model fails. Two exceptions, for
the rotation test only: a suite subclass may set ``rotation_rtol`` (a family
equivariant to a documented bound), and a family whose symmetry is learned
rather than built in states its bounds per output as ``learned_rotation_rtol``
(see :meth:`ModelConformance.rotation_tolerances`), to be met by a model trained
as the family prescribes.

Finite differences run in float64 with step ``h = 1e-5`` (Å, or strain):
the central difference has truncation error ``h^2 |f'''| / 6 ~ 5e-8`` of the
force for a wall as steep as ``r^-12`` at 1 Å, and roundoff ``eps |E| / h ~
1e-10`` eV/Å; ``FD_RTOL = 1e-6`` of the force (or stress) scale sits between
these and a 1 % error. float32 outputs are compared with the float64 ones at
``F32_VS_F64_RTOL = 1e-4`` (float32 inputs differ from float64 ones by one
rounding, ~1e-7 relative, amplified as above).

At the cutoff, a neighbour ``delta = 1e-3, 1e-4`` Å inside must change the
energy, and feel a force, below ``CUTOFF_FRACTION = 1e-2`` of their largest
values over the last Å (a force vanishing linearly over 0.01 Å still passes; a
shifted-only pair potential, whose force jumps at r_c, fails), plus roundoff
``16 eps`` of the largest term. Observed margins: every check passes with its
deviation at most ~7 % of its tolerance (float32) and ~1e-3 (float64).

Locality: fragments ``LOCALITY_GAP = 0.5`` Å beyond the cutoff must add up to
``RTOL`` of ``sum |E_i|`` (they are equal in exact arithmetic); an atom without
neighbours must feel no force beyond roundoff (``16 eps`` of the largest force),
and a lone atom must have its reference energy to ``RTOL`` of the largest
reference energy (at least 1 eV).

The forecaster suite compares displacements and new velocities with the same
``RTOL`` relative to the largest component, with velocities of ~0.01 Å/fs
(:func:`velocities_of`) that carry a net momentum.
"""

import copy
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

DTYPES = [torch.float32, torch.float64]
RTOL = {torch.float32: 1e-4, torch.float64: 1e-9}
FD_STEP = 1e-5
FD_RTOL = 1e-6
F32_VS_F64_RTOL = 1e-4
# Smoothness: within 1e-4 Å of the cutoff, the energy change and the force on the
# crossing atom must be below this fraction of their size over the last Å
# (a force that vanishes linearly over a switching width of 0.01 Å still passes).
CUTOFF_FRACTION = 1e-2
CUTOFF_DELTAS = (-1.0, -0.7, -0.5, -0.3, -0.2, -0.1, -1e-2, -1e-3, -1e-4, 1e-4, 1e-3, 1e-2, 0.3)
# Roundoff of one small system at nearly one geometry: a few ulps of the largest term.
ROUNDOFF = {dtype: 16 * torch.finfo(dtype).eps for dtype in DTYPES}
MIN_FORCE = 1e-4  # eV/Å: the largest force must exceed this, or symmetry tests prove nothing
LOCALITY_GAP = 0.5  # Å beyond the cutoff: how far apart "separated" fragments and lone atoms are


# ----------------------------------------------------------------------------- systems

def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _random_points(n: int, cell: np.ndarray, pbc: bool, min_distance: float, seed: int) -> np.ndarray:
    """``n`` points uniform in ``cell`` (rows), every pair (minimum image if ``pbc``) further than ``min_distance``."""
    rng = _rng(seed)
    points: List[np.ndarray] = []
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) @ cell
    if not pbc:
        images = np.zeros((1, 3))
    while len(points) < n:
        trial = rng.random(3) @ cell
        if all(np.linalg.norm(trial - p + images, axis=1).min() > min_distance for p in points):
            points.append(trial)
    return np.array(points)


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=1)
    return atoms


def random_cluster(n: int = 10, seed: int = 2) -> Atoms:
    """Open cluster at ~0.05 atoms/Å³ with every distance above 1 Å, random H/C/O/Cu."""
    side = (n / 0.05) ** (1 / 3)
    numbers = _rng(seed).choice([1, 6, 8, 29], size=n)
    return Atoms(numbers=numbers, positions=_random_points(n, np.eye(3) * side, False, 1.0, seed))


def _triclinic(cell: np.ndarray, seed: int, amount: float = 0.06) -> np.ndarray:
    return cell @ (np.eye(3) + amount * _rng(seed).normal(size=(3, 3)))


def copper() -> Atoms:
    """Conventional fcc Cu (4 atoms, cell 3.6 Å < 2 x cutoff), rattled and sheared to triclinic."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_cell(_triclinic(atoms.cell.array, 3), scale_atoms=True)
    atoms.rattle(0.08, seed=3)
    return atoms


def random_crystal(n: int = 8, seed: int = 4) -> Atoms:
    """Triclinic periodic cell of random H/C/O/Cu with every image distance above 1 Å."""
    cell = _triclinic(np.eye(3) * (n / 0.06) ** (1 / 3), seed, 0.15)
    numbers = _rng(seed).choice([1, 6, 8, 29], size=n)
    return Atoms(numbers=numbers, positions=_random_points(n, cell, True, 1.0, seed), cell=cell, pbc=True)


def slab() -> Atoms:
    """Cu(111) slab, periodic in-plane only."""
    atoms = fcc111("Cu", size=(2, 2, 2), vacuum=4.0)
    atoms.rattle(0.05, seed=5)
    return atoms


def small_cell() -> Atoms:
    """Three random atoms in a triclinic cell with heights ~3 Å (below the cutoff: many images of each atom)."""
    return random_crystal(3, seed=6)


SYSTEMS: Dict[str, Callable[[], Atoms]] = {
    "molecule": ethanol,
    "cluster": random_cluster,
    "copper": copper,
    "crystal": random_crystal,
    "slab": slab,
    "small": small_cell,
}


# ----------------------------------------------------------------------------- helpers

def random_rotation(seed: int, proper: bool = True) -> np.ndarray:
    """Uniform random orthogonal matrix with determinant +1 (``proper``) or -1 (rotation times inversion)."""
    q, r = np.linalg.qr(_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q = -q
    return q


def evaluate(model, systems: Sequence[Atoms], dtype: torch.dtype, stress: bool = False) -> Dict[str, np.ndarray]:
    """Run ``model`` on one batch of ``systems`` (inputs in ``dtype``); outputs as float64 arrays."""
    positions = torch.tensor(np.concatenate([a.positions for a in systems]), dtype=dtype)
    numbers = torch.tensor(np.concatenate([a.numbers for a in systems]), dtype=torch.int64)
    cell = torch.tensor(np.stack([a.cell.array for a in systems]), dtype=dtype)
    pbc = torch.tensor(np.stack([a.pbc for a in systems]), dtype=torch.bool)
    batch = torch.cat([torch.full((len(a),), i, dtype=torch.int64) for i, a in enumerate(systems)])
    out = model(positions, numbers, cell, pbc, batch, True, stress)
    return {key: value.detach().to(torch.float64).numpy() for key, value in out.items()}


def energy_of(model, atoms: Atoms, dtype: torch.dtype) -> float:
    return float(evaluate(model, [atoms], dtype)["energy"][0])


def assert_close(actual, expected, rtol: float, what: str, scale: Optional[float] = None) -> None:
    """``|actual - expected| <= rtol * scale`` elementwise; ``scale`` defaults to ``max |expected|``."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    if scale is None:
        scale = float(np.abs(expected).max()) if expected.size else 0.0
    atol = rtol * max(scale, 1e-30)
    error = float(np.abs(actual - expected).max()) if expected.size else 0.0
    assert error <= atol, f"{what}: max deviation {error:.3e} > tolerance {atol:.3e} (rtol {rtol:g} of {scale:.3e})"


def assert_outputs_close(actual, expected, rtol: float, what: str, keys=("energy", "energies", "forces", "stress")):
    """Compare output dicts; energies relative to ``sum |E_i|`` (the roundoff scale of the sum)."""
    energy_scale = float(np.abs(expected["energies"]).sum())
    for key in keys:
        if key in expected and key in actual:
            scale = energy_scale if key in ("energy", "energies") else None
            assert_close(actual[key], expected[key], rtol, f"{what}: {key}", scale)


def transformed(atoms: Atoms, rotation: np.ndarray, translation=np.zeros(3)) -> Atoms:
    """Copy with ``r -> R r + t`` and cell rows ``a -> R a`` (positions are rows: ``x R^T``)."""
    new = atoms.copy()
    new.positions = atoms.positions @ rotation.T + translation
    new.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    return new


def relabel(atoms: Atoms, species: Sequence[int]) -> Atoms:
    """Keep elements the model knows; map the others onto ``species`` (deterministically)."""
    atoms = atoms.copy()
    known = set(int(z) for z in species)
    template = sorted(set(int(z) for z in atoms.numbers))
    mapping = {z: z if z in known else int(species[i % len(species)]) for i, z in enumerate(template)}
    atoms.numbers = np.array([mapping[int(z)] for z in atoms.numbers])
    return atoms


# ----------------------------------------------------------------------------- the suite

class ConformanceSuite:
    """Fixtures and settings that both suites share; subclasses set ``species`` and ``make_model``.

    Tests take the fixtures ``model`` and ``dtype`` (float32 and float64, the
    same weights), ``models`` (both) and ``system`` names from ``SYSTEMS``. A
    test method may also be called directly with another model, which is how
    the suite's own negative controls check that it catches broken models.
    """

    species: List[int] = [1, 6, 8, 29]
    seed: int = 0
    # Test name -> reason, for a known model bug: the test is marked xfail(strict=True), so it
    # is reported, and fails loudly (XPASS) once the bug is fixed and the entry should go.
    known_failures: Dict[str, str] = {}

    def make_model(self) -> torch.nn.Module:
        """A fresh model of the family in torch's default dtype; override in the subclass."""
        raise NotImplementedError

    def export_and_load(self, model: torch.nn.Module, dtype: torch.dtype, directory: Path):
        """Write ``model`` to a file the way the family's engines read it, and load it back.

        The default is a plain TorchScript file; a distribution with its own model
        format overrides this (and may check the loaded model's metadata here).
        """
        path = Path(directory) / "model.pt"
        torch.jit.save(torch.jit.script(model), str(path))
        return torch.jit.load(str(path))

    # -- fixtures

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _one_thread(cls):
        """The systems are tiny: intra-op threads only add overhead (20x on a loaded 2-core machine)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)

    @pytest.fixture(scope="class")
    @classmethod
    def models(cls) -> Dict[torch.dtype, torch.nn.Module]:
        with torch.random.fork_rng():
            torch.manual_seed(cls.seed)
            base = cls().make_model()
        return {dtype: copy.deepcopy(base).to(dtype).eval() for dtype in DTYPES}

    @pytest.fixture(scope="class", params=DTYPES, ids=lambda d: str(d).replace("torch.", ""))
    @classmethod
    def dtype(cls, request) -> torch.dtype:
        return request.param

    @pytest.fixture(autouse=True)
    def _mark_known_failures(self, request):
        reason = self.known_failures.get(request.node.originalname)
        if reason:
            request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))

    @pytest.fixture
    def model(self, models, dtype):
        return models[dtype]

    @pytest.fixture
    def model64(self, models):
        return models[torch.float64]

    def system(self, name: str) -> Atoms:
        return relabel(SYSTEMS[name](), self.species)

    def outputs_alone(self, model, atoms: Atoms, dtype: torch.dtype) -> Dict[str, np.ndarray]:
        """The model's outputs for ``atoms`` alone, as float64 arrays; defined by each suite."""
        raise NotImplementedError

    def assert_same_as_eager(self, other, model, dtype: torch.dtype, what: str) -> None:
        """``other`` (compiled or loaded) gives ``model``'s outputs on a batch; defined by each suite."""
        raise NotImplementedError

    # -- TorchScript, export, errors (both suites)

    def test_torchscript_matches_eager(self, model, dtype):
        self.assert_same_as_eager(torch.jit.script(model), model, dtype, "TorchScript vs eager")

    def test_export_and_load_round_trip(self, model, dtype, tmp_path):
        """:meth:`export_and_load` round trip: same species, cutoff and outputs as eager."""
        loaded = self.export_and_load(model, dtype, tmp_path)
        assert [int(z) for z in loaded.species] == [int(z) for z in model.species]
        assert float(loaded.cutoff) == pytest.approx(float(model.cutoff))
        self.assert_same_as_eager(loaded, model, dtype, "exported vs eager")

    def test_unknown_element_is_a_clear_error(self, model64):
        atoms = self.system("molecule")
        unknown = next(z for z in range(1, 119) if z not in set(model64.species))
        for z in (unknown, 200):
            atoms.numbers[0] = z
            with pytest.raises(ValueError, match=rf"element \(atomic number {z}\)"):
                self.outputs_alone(model64, atoms, torch.float64)


class ModelConformance(ConformanceSuite):
    """The conformance suite of potentials (energy, forces, stress; see the module docstring)."""

    # Tolerance of the rotation/reflection test, for a family that is equivariant only up to a stated,
    # documented bound (a sphere-grid nonlinearity); every other comparison keeps RTOL.
    rotation_rtol: Dict[torch.dtype, float] = RTOL

    def rotation_tolerances(self, model, dtype: torch.dtype) -> Dict[str, float]:
        """Relative tolerance of each output (``energy``, ``energies``, ``forces``, ``stress``) in the rotation test.

        ``rotation_rtol[dtype]`` for all, unless the model's family states the bounds of a symmetry it learns
        rather than builds in: a class attribute ``learned_rotation_rtol`` (output -> bound, on the scales of
        :func:`assert_outputs_close`), which then holds for a model trained as the family prescribes.
        """
        declared = getattr(type(model), "learned_rotation_rtol", None) or {}
        return {key: max(float(declared.get(key, 0.0)), self.rotation_rtol[dtype])
                for key in ("energy", "energies", "forces", "stress")}

    def reference_energies(self, model: torch.nn.Module) -> Dict[int, float]:
        """The energy (eV) the family gives a lone atom of each element, with no neighbour within the cutoff.

        A family with per-species reference (one-body) energies returns them here; the
        default, zero, is right for a pure interaction potential such as a pair potential.
        """
        return {int(z): 0.0 for z in self.species}

    # -- contract

    @pytest.mark.parametrize("name", ["molecule", "copper"])
    def test_outputs_follow_the_contract(self, model, dtype, name):
        """Shapes and dtypes; ``sum_i E_i = E``; finite, non-trivial forces (else symmetry tests are vacuous)."""
        atoms = self.system(name)
        positions = torch.tensor(atoms.positions, dtype=dtype)
        out = model(positions, torch.tensor(atoms.numbers), torch.tensor(atoms.cell.array, dtype=dtype)[None],
                    torch.tensor(atoms.pbc)[None], torch.zeros(len(atoms), dtype=torch.int64), True, bool(atoms.pbc.all()))
        n = len(atoms)
        assert out["energy"].shape == (1,) and out["energies"].shape == (n,) and out["forces"].shape == (n, 3)
        assert out["energy"].dtype == dtype and out["forces"].dtype == dtype
        if atoms.pbc.all():
            assert out["stress"].shape == (1, 3, 3) and out["stress"].dtype == dtype
        result = {k: v.detach().double().numpy() for k, v in out.items()}
        assert all(np.isfinite(v).all() for v in result.values())
        assert_close(result["energies"].sum(), result["energy"][0], RTOL[dtype], "sum of per-atom energies",
                     float(np.abs(result["energies"]).sum()))
        assert np.abs(result["forces"]).max() > MIN_FORCE, "forces vanish: the symmetry tests would prove nothing"
        assert np.ptp(result["energies"]) > 0, "all per-atom energies are equal"

    # -- symmetry

    @pytest.mark.parametrize("proper", [True, False], ids=["rotation", "reflection"])
    @pytest.mark.parametrize("name", ["molecule", "cluster", "copper"])
    def test_rotation_and_reflection(self, model, dtype, name, proper):
        """``E(Rx) = E(x)``, ``E_i`` invariant, ``F(Rx) = R F(x)``, ``sigma(Rx) = R sigma R^T`` for det R = +-1."""
        atoms = self.system(name)
        rotation = random_rotation(7, proper)
        periodic = bool(atoms.pbc.all())
        before = evaluate(model, [atoms], dtype, periodic)
        after = evaluate(model, [transformed(atoms, rotation)], dtype, periodic)
        expected = dict(before, forces=before["forces"] @ rotation.T)
        if periodic:
            expected["stress"] = rotation @ before["stress"] @ rotation.T
        for key, rtol in self.rotation_tolerances(model, dtype).items():
            assert_outputs_close(after, expected, rtol, "rotated" if proper else "reflected", keys=(key,))

    @pytest.mark.parametrize("name", ["molecule", "cluster", "copper"])
    def test_translation(self, model, dtype, name):
        """``E(x + t) = E(x)`` and ``F(x + t) = F(x)``; periodic atoms are left unwrapped outside the cell."""
        atoms = self.system(name)
        moved = transformed(atoms, np.eye(3), _rng(8).normal(size=3) * 3.0)
        assert_outputs_close(evaluate(model, [moved], dtype), evaluate(model, [atoms], dtype), RTOL[dtype],
                             "translated")

    @pytest.mark.parametrize("name", ["molecule", "cluster", "crystal"])
    def test_permutation(self, model, dtype, name):
        """``E(Px) = E(x)``, ``F(Px) = P F(x)``, ``E_i(Px) = P E_i(x)``."""
        atoms = self.system(name)
        order = _rng(9).permutation(len(atoms))
        before = evaluate(model, [atoms], dtype)
        after = evaluate(model, [atoms[order]], dtype)
        expected = dict(before, energies=before["energies"][order], forces=before["forces"][order])
        assert_outputs_close(after, expected, RTOL[dtype], "permuted")

    # -- gradients

    @pytest.mark.parametrize("name", ["molecule", "cluster", "crystal"])
    def test_forces_match_finite_differences(self, model64, name):
        """``-F . d = (E(x + h d) - E(x - h d)) / 2h`` for d along F, two random directions and four components."""
        atoms = self.system(name)
        dtype = torch.float64
        forces = evaluate(model64, [atoms], dtype)["forces"]
        scale = float(np.linalg.norm(forces))
        assert scale > MIN_FORCE, "forces vanish"
        rng = _rng(10)
        directions = [forces / scale, rng.normal(size=forces.shape), rng.normal(size=forces.shape)]
        for atom, axis in zip(rng.integers(0, len(atoms), 4), rng.integers(0, 3, 4)):
            unit = np.zeros_like(forces)
            unit[atom, axis] = 1.0
            directions.append(unit)
        for index, d in enumerate(directions):
            d = d / np.linalg.norm(d)
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions += FD_STEP * d
            minus.positions -= FD_STEP * d
            slope = (energy_of(model64, plus, dtype) - energy_of(model64, minus, dtype)) / (2 * FD_STEP)
            assert_close(-slope, np.sum(forces * d), FD_RTOL, f"direction {index}: -dE/dx . d vs F . d", scale)

    @pytest.mark.parametrize("name", ["copper", "crystal"])
    def test_stress_matches_strain_finite_differences(self, model64, name):
        """``sigma_ab = (E(eps_ab = h) - E(eps_ab = -h)) / (2 h V)`` with cell and positions ``x (I + eps)``, all 9 ab."""
        atoms = self.system(name)
        dtype = torch.float64
        stress = evaluate(model64, [atoms], dtype, stress=True)["stress"][0]
        scale = float(np.abs(stress).max())
        assert scale > 0.0, "stress vanishes"
        numeric = np.zeros((3, 3))
        for a in range(3):
            for b in range(3):
                energies = []
                for sign in (1.0, -1.0):
                    strain = np.eye(3)
                    strain[a, b] += sign * FD_STEP
                    strained = atoms.copy()
                    strained.set_cell(atoms.cell.array @ strain, scale_atoms=False)
                    strained.positions = atoms.positions @ strain
                    energies.append(energy_of(model64, strained, dtype))
                numeric[a, b] = (energies[0] - energies[1]) / (2 * FD_STEP * atoms.get_volume())
        assert_close(stress, numeric, FD_RTOL, "stress vs strain finite differences", scale)

    @pytest.mark.parametrize("name", ["molecule", "cluster", "copper", "crystal"])
    def test_float32_matches_float64(self, models, name):
        """The float32 model (same weights) agrees with float64 to ``F32_VS_F64_RTOL``."""
        atoms = self.system(name)
        periodic = bool(atoms.pbc.all())
        single = evaluate(models[torch.float32], [atoms], torch.float32, periodic)
        double = evaluate(models[torch.float64], [atoms], torch.float64, periodic)
        assert_outputs_close(single, double, F32_VS_F64_RTOL, "float32 vs float64")

    # -- cutoff

    def _cutoff_scan(self, model, dtype):
        """Atom B moves along ``u`` away from A, across the cutoff; C sits 1.5 Å from A at 120° to ``u``,
        so only the A-B edge crosses and A's environment (hence C's) changes too.
        Returns ``{delta: outputs}`` for ``|AB| = r_c + delta``."""
        cutoff = float(model.cutoff)
        u = _rng(11).normal(size=3)
        u /= np.linalg.norm(u)
        v = np.cross(u, [0.3, 0.5, 0.8])
        v /= np.linalg.norm(v)
        a_to_c = 1.5 * (np.cos(2 * np.pi / 3) * u + np.sin(2 * np.pi / 3) * v)
        z = list(self.species)
        numbers = [z[0], z[-1], z[len(z) // 2]]
        results = {}
        for delta in CUTOFF_DELTAS:
            positions = np.array([np.zeros(3), (cutoff + delta) * u, a_to_c]) + [1.0, 2.0, 3.0]
            results[delta] = evaluate(model, [Atoms(numbers=numbers, positions=positions)], dtype)
        return results

    def test_energy_continuous_at_cutoff(self, model, dtype):
        """Beyond ``r_c`` nothing changes and B feels no force; ``E(r_c - delta) -> E(r_c+)`` as delta -> 0."""
        scan = self._cutoff_scan(model, dtype)
        outside = scan[1e-4]
        noise = ROUNDOFF[dtype] * float(np.abs(outside["energies"]).sum())
        force_noise = ROUNDOFF[dtype] * max(float(np.abs(scan[d]["forces"]).max()) for d in scan)
        for delta in (d for d in scan if d > 1e-4):
            assert_close(scan[delta]["energy"], outside["energy"], 1.0, f"energy at r_c + {delta}", noise)
            assert_close(scan[delta]["forces"], outside["forces"], 1.0, f"forces at r_c + {delta}", force_noise)
        assert_close(outside["forces"][1], 0.0, 1.0, "force on the atom beyond the cutoff", force_noise)
        change = max(abs(float(scan[d]["energy"][0] - outside["energy"][0])) for d in scan if d < 0)
        assert change > 100 * noise, "the pair does not interact within 1 Å of the cutoff: the test is vacuous"
        for delta in (-1e-3, -1e-4):
            assert_close(scan[delta]["energy"], outside["energy"], 1.0, f"energy jump at r_c - {-delta}",
                         CUTOFF_FRACTION * change + noise)

    def test_force_vanishes_at_cutoff(self, model, dtype):
        """``|F_B(r_c - delta)| -> 0`` and all forces continuous as delta -> 0 (C^1 energy at the cutoff)."""
        scan = self._cutoff_scan(model, dtype)
        outside = scan[1e-4]
        size = max(float(np.abs(scan[d]["forces"][1]).max()) for d in scan if d < 0)
        noise = ROUNDOFF[dtype] * max(float(np.abs(scan[d]["forces"]).max()) for d in scan)
        assert size > 100 * noise, "no force on the pair within 1 Å of the cutoff: the test is vacuous"
        for delta in (-1e-3, -1e-4):
            assert_close(scan[delta]["forces"][1], 0.0, 1.0, f"force on B at r_c - {-delta}",
                         CUTOFF_FRACTION * size + noise)
            assert_close(scan[delta]["forces"], outside["forces"], 1.0, f"force jump at r_c - {-delta}",
                         CUTOFF_FRACTION * size + noise)

    # -- locality: fragments beyond the cutoff, lone atoms

    def _beyond_cutoff(self, model, first: Atoms, second: Atoms) -> Atoms:
        """``second`` moved along x so that all of it lies ``cutoff + LOCALITY_GAP`` Å beyond ``first``."""
        moved = second.copy()
        moved.positions[:, 0] += (first.positions[:, 0].max() - second.positions[:, 0].min()
                                  + float(model.cutoff) + LOCALITY_GAP)
        return moved

    def test_distant_molecules_add_up(self, model, dtype):
        """Two molecules further apart than the cutoff, as one system: ``E = E_A + E_B`` and every atom's
        force and energy as in its molecule alone."""
        first = self.system("molecule")
        second = self._beyond_cutoff(model, first, self.system("cluster"))
        apart = [evaluate(model, [part], dtype) for part in (first, second)]
        assert all(np.abs(part["forces"]).max() > MIN_FORCE for part in apart), "forces vanish"
        expected = {"energy": apart[0]["energy"] + apart[1]["energy"]}
        for key in ("energies", "forces"):
            expected[key] = np.concatenate([apart[0][key], apart[1][key]])
        assert_outputs_close(evaluate(model, [first + second], dtype), expected, RTOL[dtype],
                             "two molecules beyond the cutoff vs each alone")

    def _lone_atoms(self, model) -> Dict[str, Callable[[int], Atoms]]:
        """A single atom in open space, in a periodic box wider than the cutoff, and moved elsewhere."""
        box = np.diag([1.0, 1.1, 1.2]) * (float(model.cutoff) + LOCALITY_GAP)
        return {
            "open": lambda z: Atoms(numbers=[z], positions=[[0.3, -1.2, 2.5]]),
            "moved": lambda z: Atoms(numbers=[z], positions=[[-7.1, 4.4, 0.9]]),
            "periodic": lambda z: Atoms(numbers=[z], positions=[[0.5, 0.2, 0.7]], cell=box, pbc=True),
        }

    def test_lone_atom_returns_its_reference_energy(self, model, dtype):
        """An atom alone (open, moved, or in a periodic box wider than the cutoff) has the energy
        :meth:`reference_energies` states for its element, and no force."""
        expected = self.reference_energies(model)
        scale = max([1.0] + [abs(e) for e in expected.values()])  # eV
        for z in self.species:
            for where, make in self._lone_atoms(model).items():
                out = evaluate(model, [make(int(z))], dtype)
                assert np.isfinite(out["energy"]).all() and np.isfinite(out["forces"]).all()
                assert_close(out["energy"], [expected[int(z)]], RTOL[dtype], f"energy of a lone Z={z} ({where})",
                             scale)
                # No force scale exists for a lone atom: roundoff of the energy scale per Å.
                assert_close(out["forces"], 0.0, 1.0, f"force on a lone Z={z} ({where})", ROUNDOFF[dtype] * scale)

    def test_atom_without_neighbours_in_a_structure(self, model, dtype):
        """An atom beyond the cutoff of a molecule, in the same system (open, and in a periodic box whose
        images stay beyond it): finite outputs, no force on it, the energy it has alone."""
        molecule_ = self.system("molecule")
        z = int(self.species[-1])
        far = self._beyond_cutoff(model, molecule_, Atoms(numbers=[z], positions=[[0.0, 0.4, -0.3]]))
        alone = evaluate(model, [far], dtype)
        open_ = molecule_ + far
        extent = open_.positions.max(axis=0) - open_.positions.min(axis=0)
        periodic = open_.copy()
        periodic.set_cell(np.diag(extent + float(model.cutoff) + LOCALITY_GAP))
        periodic.pbc = True
        periodic.positions += 0.5 * LOCALITY_GAP - open_.positions.min(axis=0)
        for what, structure in (("open", open_), ("periodic", periodic)):
            out = evaluate(model, [structure], dtype, stress=bool(structure.pbc.all()))
            assert all(np.isfinite(value).all() for value in out.values()), f"{what}: non-finite outputs"
            assert np.abs(out["forces"][:-1]).max() > MIN_FORCE, "forces vanish"
            scale = max(float(np.abs(out["energies"]).sum()), 1.0)
            assert_close(out["forces"][-1], 0.0, 1.0, f"{what}: force on the atom without neighbours",
                         ROUNDOFF[dtype] * float(np.abs(out["forces"]).max()))
            assert_close(out["energies"][-1], alone["energy"][0], RTOL[dtype],
                         f"{what}: energy of the atom without neighbours vs alone", scale)

    # -- batching and periodic images

    def test_batch_equals_one_by_one(self, model, dtype):
        """A batch of a molecule, cluster, sheared bulk, triclinic crystal and slab equals each alone."""
        names = ["molecule", "copper", "cluster", "crystal", "slab", "small"]
        systems = [self.system(n) for n in names]
        together = evaluate(model, systems, dtype, stress=True)
        start = 0
        for index, (name, atoms) in enumerate(zip(names, systems)):
            periodic = bool(atoms.pbc.all())
            alone = evaluate(model, [atoms], dtype, stress=periodic)
            part = {"energy": together["energy"][index:index + 1],
                    "energies": together["energies"][start:start + len(atoms)],
                    "forces": together["forces"][start:start + len(atoms)]}
            if periodic:
                part["stress"] = together["stress"][index]
                alone["stress"] = alone["stress"][0]
            assert_outputs_close(part, alone, RTOL[dtype], f"{name} in a batch")
            start += len(atoms)

    def test_molecule_across_the_box_edge(self, model, dtype):
        """Ethanol in a small triclinic box (it sees its images): shifting it across the edge, wrapped or
        moved by lattice vectors, changes nothing."""
        atoms = self.system("molecule")
        atoms.set_cell(_triclinic(np.eye(3) * 7.0, 12, 0.05))
        atoms.pbc = True
        atoms.positions += atoms.cell.array.sum(axis=0) / 2 - atoms.positions.mean(axis=0)
        reference = evaluate(model, [atoms], dtype, stress=True)
        edge = atoms.copy()
        edge.positions += 0.5 * atoms.cell.array[0] + 0.45 * atoms.cell.array[2]  # straddles two faces
        wrapped = edge.copy()
        wrapped.wrap()
        assert (np.abs(wrapped.positions - edge.positions).max(axis=1) > 1.0).any(), "nothing was wrapped"
        lattice = atoms.copy()
        lattice.positions += np.array([1, -2, 1]) @ atoms.cell.array
        for what, moved in [("shifted", edge), ("shifted and wrapped", wrapped), ("lattice-translated", lattice)]:
            assert_outputs_close(evaluate(model, [moved], dtype, stress=True), reference, RTOL[dtype], what)

    def test_small_cell_equals_supercell(self, model, dtype):
        """A cell thinner than the cutoff and its 2x2x2 supercell: same energy per atom, tiled per-atom
        energies and forces, same stress."""
        primitive = self.system("small")
        heights = primitive.get_volume() / np.linalg.norm(np.cross(primitive.cell[[1, 2, 0]],
                                                                   primitive.cell[[2, 0, 1]]), axis=1)
        assert heights.max() < float(model.cutoff), "the cell must be thinner than the cutoff"
        small = evaluate(model, [primitive], dtype, stress=True)
        large = evaluate(model, [primitive.repeat(2)], dtype, stress=True)
        n = len(primitive)
        tiled = {"energy": large["energy"] / 8, "energies": large["energies"].reshape(8, n),
                 "forces": large["forces"].reshape(8, n, 3), "stress": large["stress"]}
        expected = {"energy": small["energy"], "energies": np.tile(small["energies"], (8, 1)),
                    "forces": np.tile(small["forces"], (8, 1, 1)), "stress": small["stress"]}
        assert np.abs(small["forces"]).max() > MIN_FORCE
        assert_outputs_close(tiled, expected, RTOL[dtype], "2x2x2 supercell vs primitive cell")

    def outputs_alone(self, model, atoms: Atoms, dtype: torch.dtype) -> Dict[str, np.ndarray]:
        return evaluate(model, [atoms], dtype)

    def assert_same_as_eager(self, other, model, dtype, what):
        """Batch of an open and a periodic system, then a periodic one with stress (undefined for open ones)."""
        systems = [self.system("cluster"), self.system("crystal")]
        assert_outputs_close(evaluate(other, systems, dtype), evaluate(model, systems, dtype), RTOL[dtype], what)
        systems = [self.system("copper")]
        assert_outputs_close(evaluate(other, systems, dtype, stress=True),
                             evaluate(model, systems, dtype, stress=True), RTOL[dtype], what)


# ----------------------------------------------------------------------------- the forecaster suite

MIN_DISPLACEMENT = 1e-3  # Å: the largest displacement must exceed this, or symmetry tests prove nothing


def velocities_of(atoms: Atoms, seed: int = 0, drift: bool = True) -> np.ndarray:
    """Random velocities (Å/fs, ~300 K scale) with a net momentum (``drift``) and angular momentum."""
    v = 0.01 * _rng(seed).normal(size=(len(atoms), 3))
    return v + (0.003 if drift else 0.0)


def forecast(model, systems: Sequence[Atoms], velocities: Sequence[np.ndarray], dtype: torch.dtype
             ) -> Dict[str, np.ndarray]:
    """Run a forecaster on one batch of ``systems`` with ``velocities`` (Å/fs); outputs as float64 arrays."""
    positions = torch.tensor(np.concatenate([a.positions for a in systems]), dtype=dtype)
    numbers = torch.tensor(np.concatenate([a.numbers for a in systems]), dtype=torch.int64)
    cell = torch.tensor(np.stack([a.cell.array for a in systems]), dtype=dtype)
    pbc = torch.tensor(np.stack([a.pbc for a in systems]), dtype=torch.bool)
    batch = torch.cat([torch.full((len(a),), i, dtype=torch.int64) for i, a in enumerate(systems)])
    v = torch.tensor(np.concatenate(velocities), dtype=dtype)
    out = model(positions, numbers, cell, pbc, batch, v)
    return {key: value.detach().to(torch.float64).numpy() for key, value in out.items()}


def assert_forecasts_close(actual, expected, rtol: float, what: str) -> None:
    """Displacements and new velocities (and any per-atom output both carry, such as a stochastic
    forecaster's spreads) agree to ``rtol`` of their largest expected component."""
    for key in ("displacement", "velocities", *sorted(set(actual) & set(expected) - {"displacement", "velocities"})):
        assert_close(actual[key], expected[key], rtol, f"{what}: {key}")


class ForecasterConformance(ConformanceSuite):
    """The conformance suite of trajectory forecasters: ``(x, v) -> (d, v')`` over a fixed interval.

    Rotations and reflections (of positions, velocities and cell) rotate both
    outputs; translations change nothing; permutations permute them; a batch
    equals its systems one by one; a thin periodic cell equals its supercell;
    float32 agrees with float64; TorchScript and the exported file agree with
    eager; an unknown element is a clear error.
    """

    @pytest.mark.parametrize("name", ["molecule", "crystal"])
    def test_outputs_follow_the_contract(self, model, dtype, name):
        """``displacement`` and ``velocities`` are finite ``[N,3]`` arrays of the input dtype, not all zero."""
        atoms = self.system(name)
        out = model(torch.tensor(atoms.positions, dtype=dtype), torch.tensor(atoms.numbers),
                    torch.tensor(atoms.cell.array, dtype=dtype)[None], torch.tensor(atoms.pbc)[None],
                    torch.zeros(len(atoms), dtype=torch.int64), torch.tensor(velocities_of(atoms), dtype=dtype))
        for key in ("displacement", "velocities"):
            assert out[key].shape == (len(atoms), 3) and out[key].dtype == dtype, key
            assert bool(torch.isfinite(out[key]).all()), key
        assert float(out["displacement"].abs().max()) > MIN_DISPLACEMENT, "displacements vanish"

    @pytest.mark.parametrize("name", ["molecule", "crystal", "slab"])
    @pytest.mark.parametrize("proper", [True, False], ids=["rotation", "reflection"])
    def test_rotation_and_reflection(self, model, dtype, name, proper):
        """Rotating (or reflecting) positions, velocities and cell rotates both vector outputs."""
        atoms = self.system(name)
        v = velocities_of(atoms)
        rotation = random_rotation(7, proper)
        reference = forecast(model, [atoms], [v], dtype)
        rotated = forecast(model, [transformed(atoms, rotation)], [v @ rotation.T], dtype)
        assert np.abs(reference["displacement"]).max() > MIN_DISPLACEMENT
        # Vectors rotate; per-atom scalars (a stochastic forecaster's spreads) stay as they are.
        expected = {key: value @ rotation.T if value.ndim == 2 else value for key, value in reference.items()}
        assert_forecasts_close(rotated, expected, RTOL[dtype], f"{name} rotated")

    @pytest.mark.parametrize("name", ["molecule", "crystal"])
    def test_translation_and_permutation(self, model, dtype, name):
        """Translating changes nothing; permuting the atoms permutes both outputs."""
        atoms = self.system(name)
        v = velocities_of(atoms)
        reference = forecast(model, [atoms], [v], dtype)
        shifted = forecast(model, [transformed(atoms, np.eye(3), np.array([3.1, -7.2, 0.4]))], [v], dtype)
        assert_forecasts_close(shifted, reference, RTOL[dtype], f"{name} translated")
        order = _rng(3).permutation(len(atoms))
        permuted = forecast(model, [atoms[order]], [v[order]], dtype)
        assert_forecasts_close(permuted, {k: x[order] for k, x in reference.items()}, RTOL[dtype], f"{name} permuted")

    def test_batch_equals_one_by_one(self, model, dtype):
        names = ["molecule", "copper", "cluster", "crystal", "slab", "small"]
        systems = [self.system(n) for n in names]
        velocities = [velocities_of(a, seed=k) for k, a in enumerate(systems)]
        together = forecast(model, systems, velocities, dtype)
        start = 0
        for name, atoms, v in zip(names, systems, velocities):
            alone = forecast(model, [atoms], [v], dtype)
            part = {k: x[start:start + len(atoms)] for k, x in together.items()}
            assert_forecasts_close(part, alone, RTOL[dtype], f"{name} in a batch")
            start += len(atoms)

    def test_small_cell_equals_supercell(self, model, dtype):
        """A cell thinner than the cutoff and its 2x2x2 supercell (velocities tiled): same per-atom outputs."""
        primitive = self.system("small")
        v = velocities_of(primitive)
        small = forecast(model, [primitive], [v], dtype)
        large = forecast(model, [primitive.repeat(2)], [np.tile(v, (8, 1))], dtype)
        n = len(primitive)
        for key in ("displacement", "velocities"):
            assert_close(large[key].reshape(8, n, 3), np.tile(small[key], (8, 1, 1)), RTOL[dtype], f"supercell {key}")

    @pytest.mark.parametrize("name", ["molecule", "crystal"])
    def test_float32_matches_float64(self, models, name):
        """The float32 model (same weights) agrees with float64 to ``F32_VS_F64_RTOL``."""
        atoms = self.system(name)
        v = velocities_of(atoms)
        assert_forecasts_close(forecast(models[torch.float32], [atoms], [v], torch.float32),
                               forecast(models[torch.float64], [atoms], [v], torch.float64), F32_VS_F64_RTOL,
                               "float32 vs float64")

    def outputs_alone(self, model, atoms: Atoms, dtype: torch.dtype) -> Dict[str, np.ndarray]:
        return forecast(model, [atoms], [velocities_of(atoms)], dtype)

    def assert_same_as_eager(self, other, model, dtype, what):
        systems = [self.system("cluster"), self.system("crystal")]
        velocities = [velocities_of(a, seed=k) for k, a in enumerate(systems)]
        assert_forecasts_close(forecast(other, systems, velocities, dtype), forecast(model, systems, velocities, dtype),
                               RTOL[dtype], what)
