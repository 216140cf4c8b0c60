"""The GP-dimer's inner loop runs on the GP's device (issue 17): tensors in, tensors out, no array copies.

The dimer code takes NumPy arrays or torch tensors; on tensors it must follow the same path as on arrays
(the NumPy path is the one checked against Müller-Brown, LEPS and ASE's dimer in test_saddle_search.py), and
a search must not copy arrays to the host inside its inner loops (on a GPU that round trip per GP call is
what made the device useless).
"""

import numpy as np
import pytest
import torch

from mlmd.saddle import gp_dimer, search
from mlmd.saddle.dimer import dimer_search, rotate
from mlmd.saddle.gp import GaussianProcess
from mlmd.saddle.kernel import DTYPE, make_features
from mlmd.saddle.surfaces import LEPS, leps_atoms

LEPS_MODE = np.array([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0]])


def _leps_gp(points=8, seed=0):
    """A GP on true LEPS energies and gradients around a rattled H3 start."""
    atoms = leps_atoms(1.05, 0.95)
    free = np.arange(len(atoms))
    gp = GaussianProcess(make_features(atoms, free))
    rng = np.random.default_rng(seed)
    calculator = LEPS()
    x0 = atoms.positions.ravel().copy()
    for _ in range(points):
        probe = atoms.copy()
        probe.positions = (x0 + 0.04 * rng.normal(size=x0.size)).reshape(-1, 3)
        probe.calc = calculator
        gp.add(probe.positions.ravel(), probe.get_potential_energy(), -probe.get_forces().ravel())
    gp.fit()
    return gp, x0


def _numpy_surface(gp):
    def surface(x):
        energy, gradient = gp.predict(x)
        return float(energy[0]), gradient[0]
    return surface


def test_tensor_inner_loop_follows_the_numpy_one():
    gp, x0 = _leps_gp()
    mode = LEPS_MODE.ravel() / np.linalg.norm(LEPS_MODE)
    settings = dict(fmax=1e-3, separation_A=0.01, max_iterations=40, max_step_A=0.1, max_rotations=20)
    on_host = dimer_search(_numpy_surface(gp), x0, mode, **settings)
    as_tensors = dimer_search(gp.surface, torch.as_tensor(x0, dtype=DTYPE), torch.as_tensor(mode, dtype=DTYPE),
                              **settings)
    assert torch.is_tensor(as_tensors["x"]) and torch.is_tensor(as_tensors["mode"])
    assert as_tensors["evaluations"] == on_host["evaluations"] > 10
    assert as_tensors["iterations"] == on_host["iterations"]
    np.testing.assert_allclose(as_tensors["x"].numpy(), on_host["x"], atol=1e-9)
    np.testing.assert_allclose(as_tensors["mode"].numpy(), on_host["mode"], atol=1e-9)
    # the curvature is a difference of gradients over the 0.01 Å separation: round-off grows by 100x
    assert as_tensors["curvature"] == pytest.approx(on_host["curvature"], rel=1e-8)
    # rotation alone, from a mode 40 degrees off
    tilted = mode + 0.8 * np.roll(mode, 1)
    g = _numpy_surface(gp)(x0)[1]
    host_mode, host_c = rotate(_numpy_surface(gp), x0, g, tilted, 0.01, max_rotations=20)[:2]
    xt = torch.as_tensor(x0, dtype=DTYPE)
    device_mode, device_c = rotate(gp.surface, xt, gp.surface(xt)[1], torch.as_tensor(tilted, dtype=DTYPE),
                                   0.01, max_rotations=20)[:2]
    np.testing.assert_allclose(device_mode.numpy(), host_mode, atol=1e-9)
    assert device_c == pytest.approx(host_c, rel=1e-8)


def test_gp_dimer_inner_loops_copy_no_arrays_to_the_host(monkeypatch):
    """Count Tensor.cpu / Tensor.numpy while the inner dimer runs: zero, however many GP calls it makes."""
    copies, gp_calls, devices = [0], [0], set()
    inside = [False]
    original_cpu, original_numpy = torch.Tensor.cpu, torch.Tensor.numpy
    original_surface = GaussianProcess.surface

    def counting_cpu(self, *args, **kwargs):
        copies[0] += inside[0]
        return original_cpu(self, *args, **kwargs)

    def counting_numpy(self, *args, **kwargs):
        copies[0] += inside[0]
        return original_numpy(self, *args, **kwargs)

    def counting_surface(self, x):
        gp_calls[0] += inside[0]
        devices.add((type(x).__name__, str(getattr(x, "device", None)), str(self.device)))
        return original_surface(self, x)

    def inner(*args, **kwargs):
        inside[0] = True
        try:
            return dimer_search(*args, **kwargs)
        finally:
            inside[0] = False

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    monkeypatch.setattr(torch.Tensor, "numpy", counting_numpy)
    monkeypatch.setattr(GaussianProcess, "surface", counting_surface)
    monkeypatch.setattr(gp_dimer, "dimer_search", inner)
    atoms = leps_atoms(1.05, 0.95)
    atoms.rattle(0.05, seed=0)
    result = search(atoms, method="gp-dimer", mode=LEPS_MODE, fmax=0.01, max_calls=100)
    assert result.converged
    assert gp_calls[0] > 20  # the inner loops did run on the GP
    assert copies[0] == 0
    assert devices == {("Tensor", "cpu", "cpu")}
