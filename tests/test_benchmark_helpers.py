"""Pieces of scripts/nve_drift.py and scripts/benchmark_force_calls.py: the drift and spread of an energy
series against values known by construction, a real NVE log read back, and the 101-atom alkane's bonding
against ASE's neighbour list."""

import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import nve_drift  # noqa: E402
from benchmark_force_calls import alkane  # noqa: E402


def test_conservation_of_a_known_series():
    """E(t) = E0 + a t + b cos(w t) over whole periods (cos is uncorrelated with t there, so the least-squares
    slope is a exactly): drift a per atom, spread max |E - E0| per atom."""
    n_atoms, a, b = 9, 0.018, 0.0045  # eV/ps, eV
    time_ps = np.linspace(0.0, 5.0, 5001)
    total = -100.0 + a * time_ps + b * np.cos(2 * np.pi * time_ps)
    drift, spread = nve_drift.conservation(time_ps, total, n_atoms)
    assert drift == pytest.approx(1000 * a / n_atoms, rel=1e-3)
    assert spread == pytest.approx(1000 * np.abs(total - total[0]).max() / n_atoms, rel=1e-12)
    flat_drift, _ = nve_drift.conservation(time_ps, -100.0 + b * np.cos(2 * np.pi * time_ps), n_atoms)
    assert flat_drift < 1e-3 * drift


def test_energy_series_reads_an_nve_log_of_mlmd_md(tmp_path):
    """An ``mlmd md`` verlet log of EMT copper (no model needed) read back: its times, and a total energy
    that stays put while the kinetic energy swings (so the columns were added, not mixed up)."""
    from mlmd.md import run

    log = tmp_path / "nve.csv"
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    run(atoms, calculator="emt", integrator="verlet", temperature_K=300.0, timestep_fs=1.0, steps=200, seed=1,
        log=log, stride=10, plot=False, use_velocities=False)
    time_ps, total = nve_drift.energy_series(log)
    assert len(time_ps) == 21 and time_ps[-1] == pytest.approx(0.2)
    kinetic = np.loadtxt(log, delimiter=",", skiprows=1, usecols=3)
    assert np.ptp(kinetic) > 0.1  # eV: the lattice starts at its minimum, so half of K goes into U
    assert np.ptp(total) < 0.02 * np.ptp(kinetic)


def test_alkane_has_the_bonds_of_an_alkane():
    atoms = alkane(33)
    assert atoms.get_chemical_formula() == "C33H68" and len(atoms) == 101
    i, j, d = neighbor_list("ijd", atoms, 1.65)
    neighbours = np.bincount(i, minlength=len(atoms))
    carbon = atoms.numbers == 6
    assert (neighbours[carbon] == 4).all() and (neighbours[~carbon] == 1).all()
    hydrogen_pairs = (atoms.numbers[i] == 1) & (atoms.numbers[j] == 1)
    assert not hydrogen_pairs.any()
    ch = (atoms.numbers[i] == 6) & (atoms.numbers[j] == 1)
    assert np.allclose(d[ch], 1.09) and np.allclose(d[(atoms.numbers[i] == 6) & (atoms.numbers[j] == 6)], 1.53)
