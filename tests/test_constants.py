"""The constants module against ASE's and OpenMM's independent unit systems."""

import math

import pytest
from ase.units import create_units
from openmm import unit as omm

from mlmd import constants as c

# ASE defaults to CODATA 2014; mlmd uses CODATA 2018.
units = create_units("2018")


def test_boltzmann_matches_ase():
    assert c.KB_EV_PER_K == pytest.approx(units.kB, rel=1e-9)


def test_kinetic_energy_unit_matches_ase_time_unit():
    # ASE: masses in amu, velocities in Å per ASE time unit give eV; 1 fs = units.fs ASE units.
    assert c.AMU_A2_PER_FS2_EV == pytest.approx(1.0 / units.fs**2, rel=1e-9)
    assert c.EV_PER_A_AMU_TO_A_PER_FS2 * c.AMU_A2_PER_FS2_EV == pytest.approx(1.0)


def test_openmm_boundary_factors_match_openmm_units():
    ev = (1.0 * omm.elementary_charge * omm.volt * omm.AVOGADRO_CONSTANT_NA).value_in_unit(omm.kilojoule_per_mole)
    assert c.EV_KJ_PER_MOL == pytest.approx(ev, rel=1e-8)
    assert c.EV_KJ_PER_MOL * c.KJ_PER_MOL_EV == pytest.approx(1.0)
    assert c.NM_ANGSTROM == (1.0 * omm.nanometer).value_in_unit(omm.angstrom)
    assert c.PS_FS == (1.0 * omm.picosecond).value_in_unit(omm.femtosecond)
    assert c.EV_PER_A_KJ_PER_MOL_NM == pytest.approx(ev * 10.0, rel=1e-8)
    assert c.A_PER_FS_NM_PER_PS == pytest.approx(100.0)


def test_stress_unit_matches_ase():
    assert c.EV_PER_A3_GPA == pytest.approx(1.0 / units.GPa, rel=1e-9)


def test_hartree_and_bohr_match_ase():
    assert c.HARTREE_EV == pytest.approx(units.Hartree, rel=1e-8)
    assert c.BOHR_ANGSTROM == pytest.approx(units.Bohr, rel=1e-8)
    assert math.isfinite(c.AMU_KG)
