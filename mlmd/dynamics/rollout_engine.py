"""The ``rollout`` engine: a trajectory forecaster applied interval after interval (:mod:`integrators.rollout`).

One engine step is one forecast interval τ_f (the forecaster's ``interval_fs``).
Positions are wrapped into the cell along periodic directions inside the engine;
snapshots carry the unwrapped positions for trajectories. CSVR couples once per
interval with relaxation time ``tau_fs`` (``thermostat="none"``: no coupling).
``T = 2 E_kin / (N_dof k_B)`` as :func:`integrators.rollout.kinetic_kT` counts it: a start with
zero total momentum (no fixed atoms) removes 3 components, and zero angular momentum of an
isolated molecule 3 more (2 for a diatomic) (:func:`integrators.state.conserved_components`);
the rollout then keeps them at zero every interval (:func:`integrators.rollout.remove_conserved_motion`).
The count is fixed at the start and stored in restart files. Velocities drawn by mlmd's sampler
carry momentum, so only a structure given with momentum-free velocities (a frame of a reference
trajectory) counts fewer.
An optional energy monitor (:func:`mlmd.dynamics.potential.energy_monitor`) fills ``epot_eV`` at the
steps ``monitor_when(step)`` names (the logged ones): it is a whole potential call, often dearer than
the forecast itself, so the intervals in between do not pay for it. With
``settings.energy_correction`` the same potential makes every interval energy-aware
(:func:`integrators.rollout.energy_conserving`: one energy call per interval), and ``epot_eV`` is then
the value that step computed anyway.

A stochastic forecaster samples every interval (seeded noise, :func:`integrators.rollout.forecast_noise`)
unless ``settings.mean_only`` asks for its mean (the deterministic mode, for comparison).
"""

from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np
import torch

from ..constants import KB_EV_PER_K
from ..errors import MLMDError
from .engine import WARM_UP_CALLS, ForceCallFailed, Snapshot, StateEngine, one_line, register_engine
from .system import start_or_continue

THERMOSTATS = ("csvr", "none")
# Energy-aware forecasts a replica may have rejected in a row before the run stops: a forecaster that moves a
# configuration uphill past its total energy from (x, v) and from (x, -v) alike cannot move it at all, and the
# replica would sit still at the right temperature (ethanol from a held-out run: 375 of 400 intervals).
MAX_REJECTED_IN_A_ROW = 25


@dataclass
class LoadedForecaster:
    """A forecaster ready for :func:`integrators.rollout.step`: ``call`` runs the contract."""

    call: Callable
    interval_fs: float
    species: List[int]
    cutoff: float
    source: str = "forecaster"
    stochastic: bool = False  # it samples from a predicted distribution when given noise


def load_forecaster(model, device: str = "cpu") -> LoadedForecaster:
    """A forecaster from an exported file, a :class:`mlmd.model.Model` (its ``forecast``) or a raw module."""
    from ..model import Model, load_model

    if isinstance(model, LoadedForecaster):
        return model
    if isinstance(model, torch.nn.Module):  # a raw module with the forecaster contract: call it directly
        module, metadata, name = model.to(device), {}, type(model).__name__
        family = getattr(module, "family", "forecaster")
        is_forecaster = family == "forecaster"
        call = module
    else:
        module = model if isinstance(model, Model) else load_model(model, device=device)
        metadata, name = module.metadata, f"model {module.path}" if module.path else "this model"
        family = module.family
        is_forecaster = module.is_forecaster or family == "forecaster"
        # Model.forecast when the wrapper knows it is a forecaster, else the TorchScript module itself.
        call = module.forecast if module.is_forecaster else module.module
    if not is_forecaster:
        raise MLMDError(f"{name} is a {family or 'unknown'}-family potential, not a trajectory forecaster; run "
                        "potentials with `mlmd md`, and give `mlmd forecast` a model of the forecaster family")
    interval = metadata.get("interval_fs")
    for holder in (module, getattr(module, "module", None)):
        if interval is None and holder is not None:
            interval = getattr(holder, "interval_fs", None)
    if interval is None or not float(interval) > 0:
        raise MLMDError(f"{name} does not say its interval (interval_fs); re-export the forecaster")
    species = metadata.get("species", None) or list(getattr(module, "species", []))
    cutoff = float(metadata.get("cutoff", getattr(module, "cutoff", 0.0)))
    stochastic = bool(metadata.get("stochastic", getattr(module, "stochastic", False)))
    return LoadedForecaster(call, float(interval), [int(z) for z in species], cutoff, name, stochastic)


@dataclass
class ForecastSettings:
    """What the rollout engine needs besides the structure and the forecaster (units in the names)."""

    temperature_K: float = 300.0
    thermostat: str = "csvr"
    tau_fs: float = 1000.0
    seed: int = 0
    replicas: int = 1
    device: str = "cpu"
    mean_only: bool = False  # a stochastic forecaster returns its mean instead of sampling
    energy_correction: bool = False  # scale velocities so that the monitor potential's U + K is conserved


def rollout_step(state, forecaster: LoadedForecaster, sample: bool = True, potential_energy=None):
    """One interval of :func:`integrators.rollout.step` (sampled when the forecaster is stochastic and
    ``sample``; energy-aware with ``potential_energy``); a failing call raises ForceCallFailed."""
    from integrators import rollout

    try:
        new = rollout.step(state, forecaster.call, forecaster.interval_fs, forecaster.stochastic and sample,
                           potential_energy)
    except (RuntimeError, ValueError, ArithmeticError, KeyError, torch.jit.Error) as exc:
        raise ForceCallFailed(f"the forecaster call failed ({one_line(exc)})") from exc
    stuck = stuck_replica(new)
    if stuck:
        raise ForceCallFailed(stuck)
    return new


def stuck_replica(state) -> Optional[str]:
    """A sentence naming a replica whose last ``MAX_REJECTED_IN_A_ROW`` energy-aware forecasts were all rejected
    (:func:`integrators.rollout.energy_conserving`), or None."""
    streak = state.rejected_streak
    if streak is None or int(streak.max()) < MAX_REJECTED_IN_A_ROW:
        return None
    replica = int(torch.argmax(streak))
    where = f"replica {replica}: " if len(streak) > 1 else ""
    return (f"{where}the energy-aware step rejected {int(streak[replica])} forecasts in a row (each moved the atoms "
            "to a potential energy above the total), so this configuration cannot move and would sit still at the "
            "right temperature; it is probably unlike the forecaster's training data. Try more training data near "
            "it, a shorter interval, or MD with the potential")


@register_engine("rollout")
class RolloutEngine(StateEngine):
    """``settings.replicas`` copies of ``atoms`` advanced by ``forecaster``; ``monitor`` gives ``epot_eV`` at the
    steps where ``monitor_when(step)`` is true (default: every step)."""

    drives = "forecaster"

    def __init__(self, atoms, forecaster: LoadedForecaster, settings: ForecastSettings,
                 restart: Optional[dict] = None, monitor: Optional[Callable] = None,
                 monitor_when: Callable[[int], bool] = lambda step: True):
        from integrators import rollout
        from integrators.state import conserved_components

        if settings.thermostat not in THERMOSTATS:
            raise MLMDError(f"unknown thermostat {settings.thermostat!r}; choose one of {', '.join(THERMOSTATS)}")
        self.forecaster, self.monitor, self.monitor_when = forecaster, monitor, monitor_when
        if settings.energy_correction and monitor is None:
            raise MLMDError("the energy-aware forecast needs a potential: give --potential MODEL.pt or --calculator "
                            "NAME (or drop --energy-correction)")
        self.sample = not settings.mean_only
        self.potential_energy = monitor if settings.energy_correction else None
        device = settings.device
        system, positions, velocities = start_or_continue(atoms, settings.replicas, settings.seed,
                                                          settings.temperature_K, device, "mlmd forecast", restart)
        rate = (1.0 / settings.tau_fs) if settings.thermostat == "csvr" else 0.0
        state = rollout.init(positions, velocities, kT=KB_EV_PER_K * settings.temperature_K, friction=rate,
                             **system.arguments())
        if restart is not None and "constrained_dof" in restart:
            constrained = restart["constrained_dof"].to(device)
        else:  # a fresh start (or a restart file written before the count was stored)
            constrained = conserved_components(state)
        state = state.replace(constrained_dof=constrained)
        if restart is not None:
            known, streak = restart.get("potential_energy"), restart.get("rejected_streak")
            state = state.replace(images=restart["images"].to(device), step=int(restart["step"]),
                                  potential_energy=None if known is None else known.to(device),
                                  rejected_streak=None if streak is None else streak.to(device))
            for _ in range(WARM_UP_CALLS):  # TorchScript's first calls run unoptimised graphs: take (and drop)
                self.step_once(state)         # whole intervals, so every call on the way is warmed up
        self.state = state

    def step_once(self, state):
        return rollout_step(state, self.forecaster, self.sample, self.potential_energy)

    def snapshot(self) -> Snapshot:
        from integrators import rollout

        state = self.state
        epot = None
        if state.potential_energy is not None:  # the energy-aware step computed it anyway
            epot = state.potential_energy.detach().cpu().numpy().astype(np.float64)
        elif self.monitor is not None and self.monitor_when(state.step):
            epot = self.monitor(state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch)
            epot = epot.detach().cpu().numpy().astype(np.float64)
        return Snapshot(
            step=state.step,
            ekin_eV=rollout.kinetic_energy(state).detach().cpu().numpy(),
            temperature_K=(rollout.kinetic_kT(state) / KB_EV_PER_K).detach().cpu().numpy(),
            positions_A=state.positions.detach().cpu().numpy(),
            velocities_A_per_fs=state.velocities.detach().cpu().numpy(),
            cell_A=state.cell[0].cpu().numpy(),
            pbc=state.pbc[0].cpu().numpy(),
            epot_eV=epot,
            frame_positions_A=state.unwrapped_positions().detach().cpu().numpy(),
        )

    def payload(self, point) -> dict:
        return {"step": point.step, "positions": point.positions.cpu(), "velocities": point.velocities.cpu(),
                "images": point.images.cpu(), "constrained_dof": point.constrained_dof.cpu(),
                **{name: getattr(point, name).cpu() for name in ("potential_energy", "rejected_streak")
                   if getattr(point, name) is not None}}


def single_replica_state(positions_A, velocities_A_per_fs, masses_amu, numbers, cell_A, pbc, fixed,
                         temperature_K: float, rate_per_fs: float, seed: int, step: int):
    """A one-replica :class:`integrators.rollout.RolloutState` from plain arrays (Å, Å/fs, amu, Å), for drivers
    that keep their state elsewhere (an ASE ``Atoms``, an OpenMM ``Context``).

    Its ``constrained_dof`` counts what the forecaster's conservation layer keeps at zero in this state (zero
    total momentum, and zero angular momentum when isolated), so CSVR and the temperature use N_f = 3N - 3 or
    3N - 6 as :class:`RolloutEngine` does, not 3N."""
    from integrators import rollout
    from integrators.state import conserved_components

    from ..constants import AMU_A2_PER_FS2_EV

    as_float = lambda array: torch.as_tensor(np.asarray(array, dtype=float))
    state = rollout.init(
        as_float(positions_A), as_float(velocities_A_per_fs), as_float(masses_amu) * AMU_A2_PER_FS2_EV,
        torch.as_tensor(np.asarray(numbers), dtype=torch.int64), as_float(cell_A)[None],
        torch.as_tensor(np.asarray(pbc, dtype=bool))[None], torch.zeros(len(numbers), dtype=torch.int64),
        kT=KB_EV_PER_K * temperature_K, friction=rate_per_fs, seeds=seed, fixed=torch.as_tensor(fixed))
    return state.replace(step=step, constrained_dof=conserved_components(state))


def checked_interval(state, forecaster: LoadedForecaster, min_distance_A: Optional[float],
                     max_temperature_K: Optional[float], where: str, potential_energy: Optional[Callable] = None):
    """One interval from ``state`` (energy-aware with ``potential_energy``), checked by
    :func:`mlmd.dynamics.guards.guard_problem`; raises :class:`~mlmd.dynamics.guards.UnstableRunError`
    (the state before the interval stays the caller's)."""
    from integrators import rollout

    from .guards import UnstableRunError, guard_problem

    try:
        new = rollout_step(state, forecaster, potential_energy=potential_energy)
        problem = guard_problem(new.positions, new.velocities, new.cell, new.pbc, new.batch,
                                rollout.kinetic_kT(new) / KB_EV_PER_K, min_distance_A, max_temperature_K)
    except ForceCallFailed as exc:
        problem = str(exc)
    if problem:
        raise UnstableRunError(f"{where}: the forecast became unstable at step {state.step + 1}: {problem}; the "
                               "state before that step is left in place", None)
    return new
