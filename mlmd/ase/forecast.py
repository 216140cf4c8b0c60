"""A trajectory forecaster as ASE dynamics: :class:`ForecastDynamics`.

Each step advances one forecaster interval τ_f with :func:`integrators.rollout.step`
(one replica; optional CSVR once per interval with relaxation time ``taut``), so it
moves atoms exactly as ``mlmd forecast`` does, checked by the same guards
(:mod:`mlmd.dynamics.guards`). The time step is the forecaster's interval;
observers and ``Trajectory`` writers attach as usual (``dyn.attach(traj.write,
interval=1)``). A calculator on the atoms is an energy monitor (for loggers and
trajectory energies), and with ``energy_correction=True`` the potential of the
energy-aware step (:func:`integrators.rollout.energy_conserving`: one energy call per
interval); otherwise none is needed. A stochastic forecaster samples with noise seeded
by ``seed`` and the step. Positions stay unwrapped, as in every ASE dynamics.
"""

from typing import Optional

import numpy as np
import torch
from ase import units
from ase.md.md import MolecularDynamics

from ..checks import fixed_atoms_mask
from ..dynamics.rollout_engine import checked_interval, load_forecaster, single_replica_state
from ..errors import MLMDError


class ForecastDynamics(MolecularDynamics):
    """ASE dynamics that advances ``atoms`` by one forecaster interval per step.

    Args:
        atoms: the system (``FixAtoms`` honoured); a calculator on it only monitors the energy.
        model: exported forecaster file, :class:`mlmd.model.Model` or forecaster module.
        temperature_K, taut: CSVR target (K) and relaxation time (ASE time units, e.g. ``100 * units.fs``);
            leave both None for no thermostat.
        seed: thermostat noise seed (the noise of step n depends only on seed and n).
        min_distance_A, max_temperature_K: guards (None: off); a trip raises ForecastUnstableError.
        energy_correction: scale the forecast velocities so that the attached calculator's U + K changes
            only by what the thermostat exchanges.
        Other keyword arguments (``trajectory``, ``logfile``, ``loginterval``) go to ``MolecularDynamics``.
    """

    def __init__(self, atoms, model, temperature_K: Optional[float] = None, taut: Optional[float] = None,
                 seed: int = 0, min_distance_A: Optional[float] = 0.5, max_temperature_K: Optional[float] = None,
                 device: str = "cpu", energy_correction: bool = False, **kwargs):
        self.forecaster = load_forecaster(model, device=device)
        super().__init__(atoms, self.forecaster.interval_fs * units.fs, **kwargs)
        if (temperature_K is None) != (taut is None):
            raise MLMDError("ForecastDynamics: give both temperature_K and taut for CSVR, or neither for none")
        self.temperature_K = 0.0 if temperature_K is None else float(temperature_K)
        self.rate_per_fs = 0.0 if taut is None else 1.0 / (taut / units.fs)
        self.seed = int(seed)
        self.min_distance_A, self.max_temperature_K = min_distance_A, max_temperature_K
        self.fixed = fixed_atoms_mask(atoms, type(self).__name__)
        self.steps_taken = 0
        if energy_correction and atoms.calc is None:
            raise MLMDError("ForecastDynamics(energy_correction=True) needs a calculator on the atoms: its "
                            "energy is what the step conserves")
        self.energy_correction = bool(energy_correction)
        self._known_energy = None  # (positions Å, U [1] eV, rejections in a row) after the last step: U once a step
        self._probe = None  # a copy of the atoms that carries the calculator to the positions U is asked at

    def _refresh_properties(self):
        if self.atoms.calc is not None:  # only an energy monitor; a forecaster needs no forces
            super()._refresh_properties()

    def step(self):
        atoms = self.atoms
        state = single_replica_state(atoms.get_positions(), atoms.get_velocities() * units.fs, atoms.get_masses(),
                                      atoms.numbers, atoms.cell.array, atoms.pbc, self.fixed, self.temperature_K,
                                      self.rate_per_fs, self.seed, self.steps_taken)
        potential_energy = None
        if self.energy_correction:
            potential_energy = self._calculator_energy
            known = self._known_energy
            if known is not None and np.array_equal(known[0], atoms.positions):
                state = state.replace(potential_energy=known[1], rejected_streak=known[2])
        state = checked_interval(state, self.forecaster, self.min_distance_A, self.max_temperature_K,
                                 type(self).__name__, potential_energy)
        atoms.set_positions(state.unwrapped_positions().numpy(), apply_constraint=False)
        atoms.set_velocities(state.velocities.numpy() / units.fs)  # Å/fs -> Å/(ASE time)
        if self.energy_correction:
            self._known_energy = (atoms.positions.copy(), state.potential_energy, state.rejected_streak)
        self.steps_taken += 1

    def _calculator_energy(self, positions, atomic_numbers, cell, pbc, batch):
        """U ``[1]`` eV of the attached calculator at ``positions`` (Å)."""
        if self._probe is None:
            self._probe = self.atoms.copy()
        self._probe.calc = self.atoms.calc
        self._probe.set_positions(positions.detach().cpu().numpy(), apply_constraint=False)
        return torch.tensor([self._probe.get_potential_energy()], dtype=positions.dtype)
