"""A trajectory forecaster driving an ``openmm.app.Simulation``: :class:`OpenMMForecastDriver`.

It advances the Simulation's Context: read positions/velocities (nm, nm/ps -> Å, Å/fs),
forecast one interval τ_f (as ``mlmd forecast`` does, checked by the same guards), write
them back, advance the Context's time by τ_f and its step count by one, and call the
Simulation's reporters whose ``describeNextReport`` asks for this step, so
``StateDataReporter`` and ``DCDReporter`` work (one reporter step = one interval).
The Simulation's integrator never steps; :func:`forecast_integrator` gives a no-op
``CustomIntegrator`` whose kinetic energy is ½ m v² of the current velocities
(leapfrog integrators such as ``VerletIntegrator`` report a half-step-shifted
kinetic energy instead).
"""

from typing import Optional

import numpy as np
import torch

from ..constants import A_PER_FS_NM_PER_PS, EV_KJ_PER_MOL, FS_PS, NM_ANGSTROM, PS_FS
from ..dynamics.guards import UnstableRunError
from ..dynamics.rollout_engine import checked_interval, load_forecaster, single_replica_state
from ..errors import MLMDError


def forecast_integrator(interval_fs: float):
    """A ``CustomIntegrator`` that does nothing, with step size τ_f: the integrator to build a Simulation
    with when :class:`OpenMMForecastDriver` advances it (kinetic energy ½ m v² of the current velocities)."""
    import openmm

    return openmm.CustomIntegrator(interval_fs * FS_PS)


class OpenMMForecastDriver:
    """Advance an ``openmm.app.Simulation`` with a forecaster; ``step(n)`` takes n intervals.

    Particles with zero mass are held fixed (OpenMM's convention). Atomic numbers come from the
    Simulation's topology. A periodic System gives the box (rows = lattice vectors) and pbc on all axes.
    With ``energy_correction`` the Simulation's own System is the potential of the energy-aware step
    (its forces are never used; one energy evaluation per interval). A stochastic forecaster samples
    with noise seeded by ``seed`` and the step.
    """

    def __init__(self, simulation, model, temperature_K: Optional[float] = None, tau_fs: Optional[float] = None,
                 seed: int = 0, min_distance_A: Optional[float] = 0.5, max_temperature_K: Optional[float] = None,
                 device: str = "cpu", energy_correction: bool = False):
        self.simulation = simulation
        self.energy_correction = bool(energy_correction)
        self._known_energy = None  # (step, U [1] eV, rejections in a row) after the last interval
        self.forecaster = load_forecaster(model, device=device)
        if (temperature_K is None) != (tau_fs is None):
            raise MLMDError("OpenMMForecastDriver: give both temperature_K and tau_fs for CSVR, or neither for none")
        self.temperature_K = 0.0 if temperature_K is None else float(temperature_K)
        self.rate_per_fs = 0.0 if tau_fs is None else 1.0 / float(tau_fs)
        self.seed = int(seed)
        self.min_distance_A, self.max_temperature_K = min_distance_A, max_temperature_K
        system = simulation.system
        self.masses_amu = np.array([system.getParticleMass(i)._value for i in range(system.getNumParticles())])
        self.fixed = self.masses_amu == 0.0
        self.numbers = []
        for atom in simulation.topology.atoms():
            if atom.element is None:
                raise MLMDError(f"OpenMMForecastDriver: topology atom {atom.index} ({atom.name}) has no element; "
                                "the forecaster needs atomic numbers")
            self.numbers.append(atom.element.atomic_number)
        if len(self.numbers) != len(self.masses_amu):
            raise MLMDError(f"OpenMMForecastDriver: the topology has {len(self.numbers)} atoms but the System "
                            f"{len(self.masses_amu)} particles")
        unknown = sorted(set(self.numbers) - set(self.forecaster.species)) if self.forecaster.species else []
        if unknown:
            raise MLMDError(f"OpenMMForecastDriver: atomic numbers {unknown} are not known to the forecaster "
                            f"(species {self.forecaster.species})")
        self.periodic = bool(system.usesPeriodicBoundaryConditions())
        self.steps_taken = 0

    @property
    def interval_fs(self) -> float:
        return self.forecaster.interval_fs

    def _read(self):
        from openmm import unit

        state = self.simulation.context.getState(getPositions=True, getVelocities=True)
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * NM_ANGSTROM
        velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        cell = np.zeros((3, 3))
        if self.periodic:
            cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) * NM_ANGSTROM
        return np.asarray(positions), np.asarray(velocities) / A_PER_FS_NM_PER_PS, np.asarray(cell)

    def step(self, steps: int) -> None:
        """Advance ``steps`` intervals, reporting as ``Simulation.step`` would."""
        if int(steps) != steps or steps < 0:
            raise MLMDError(f"OpenMMForecastDriver.step needs a whole number of intervals >= 0, got {steps!r}")
        context = self.simulation.context
        for _ in range(int(steps)):
            due = self._due_reports()
            positions, velocities, cell = self._read()
            state = single_replica_state(positions, velocities, self.masses_amu, self.numbers, cell,
                                          [self.periodic] * 3, self.fixed, self.temperature_K, self.rate_per_fs,
                                          self.seed, self.steps_taken)
            potential_energy = None
            if self.energy_correction:
                potential_energy = self._context_energy
                if self._known_energy is not None and self._known_energy[0] == self.steps_taken:
                    state = state.replace(potential_energy=self._known_energy[1],
                                          rejected_streak=self._known_energy[2])
            try:
                state = checked_interval(state, self.forecaster, self.min_distance_A, self.max_temperature_K,
                                         type(self).__name__, potential_energy)
            except UnstableRunError:
                context.setPositions(positions / NM_ANGSTROM)  # the energy probe moved them
                raise
            if self.energy_correction:
                self._known_energy = (self.steps_taken + 1, state.potential_energy, state.rejected_streak)
            context.setPositions(state.unwrapped_positions().numpy() / NM_ANGSTROM)
            context.setVelocities(state.velocities.numpy() * A_PER_FS_NM_PER_PS)
            context.setTime(context.getTime() + self.interval_fs / PS_FS * _picosecond())
            context.setStepCount(context.getStepCount() + 1)
            self.steps_taken += 1
            if due:
                self._report(due)

    def _context_energy(self, positions, atomic_numbers, cell, pbc, batch):
        """U ``[1]`` eV of the Simulation's System at ``positions`` (Å; set into its Context)."""
        from openmm import unit

        context = self.simulation.context
        context.setPositions(positions.detach().cpu().numpy() / NM_ANGSTROM)
        energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        return torch.tensor([energy / EV_KJ_PER_MOL], dtype=positions.dtype)

    def _due_reports(self):
        """The reporters whose next report falls on the step about to be taken, with their requests."""
        due = []
        for reporter in self.simulation.reporters:
            report = reporter.describeNextReport(self.simulation)
            if isinstance(report, tuple):  # the old format: (steps, positions, velocities, forces, energy[, wrap])
                names = ("positions", "velocities", "forces", "energy")
                report = {"steps": report[0], "include": [names[i] for i in range(4) if report[i + 1]],
                          "periodic": report[5] if len(report) > 5 else None}
            if report["steps"] == 1:
                due.append((reporter, report))
        return due

    def _report(self, due) -> None:
        context = self.simulation.context
        groups = {}
        for reporter, report in due:
            wrap = self.periodic if report.get("periodic") is None else bool(report["periodic"])
            wrap = wrap and "positions" in report["include"]
            groups.setdefault(wrap, []).append((reporter, report))
        for wrap, members in groups.items():
            include = set().union(*(set(report["include"]) for _, report in members))
            state = context.getState(getPositions="positions" in include, getVelocities="velocities" in include,
                                     getForces="forces" in include, getEnergy="energy" in include,
                                     getParameters=True, enforcePeriodicBox=wrap)
            for reporter, _ in members:
                reporter.report(self.simulation, state)


def _picosecond():
    from openmm import unit

    return unit.picosecond
