"""Evaluate a trained trajectory forecaster against reference MD trajectories.

Given reference runs (``mlmd generate SYSTEM --trajectory``: HDF5 or extended XYZ, read by
:func:`mlmd.trajectories.read_trajectory`) and an exported forecaster, prints a table and writes JSON:

1. one-step errors on held-out pairs (frame t -> t + τ_f, ``--held-out`` runs, by default the last
   reference run): MAE and RMSE of the displacement (Å) and of the new velocities (Å/fs), the RMSE
   relative to the RMS of the reference, and relative to the RMSE of free flight (x + v τ, v' = v);
2. structure over a CSVR rollout of ``--replicas`` replicas (default: as many as reference runs) of
   ``--time`` (default: the length of one reference run, so both sample the same total time):
   the radial distribution function g(r) (periodic systems; minimum image up to half the shortest
   cell width; max |Δg| beyond the first 1.5 Å), the pair-distance histogram, and for molecules the
   bond-length and bond-angle histograms (bonds from covalent radii × 1.2 in the first frame), each
   compared with the reference as the L1 distance between normalised histograms ∫|p_f - p_ref| ∈ [0, 2];
3. dynamics: velocity autocorrelation C(t) = <v(0)·v(t)>/<v·v> (RMS difference over the lags up to
   ``--vacf-window``) and its spectrum (|FFT|, cm⁻¹; the reference subsampled to the forecaster's
   interval so both share one Nyquist frequency); mean-square displacement of the unwrapped positions
   and the diffusion coefficient D from its slope over the second half of ``--msd-window`` (D ratio);
4. temperature: mean, variance and KS distance of the kinetic temperature T = 2K/(N_f k_B) (the
   definition the CSVR thermostat controls: N_f = 3N minus the components the dynamics keeps at zero,
   3 for a start at zero total momentum, :func:`integrators.state.conserved_components`) over a long
   rollout, against the canonical Gamma(N_f/2) values <T> = T₀, Var T = 2 T₀²/N_f, and against the
   reference runs' temperatures (their own N_f);
5. stability: ``--stability-replicas`` replicas rolled out for up to ``--stability-steps`` intervals or
   ``--stability-minutes`` of wall time, whichever comes first, with the guards of ``mlmd forecast``
   (:func:`mlmd.forecast.guard_problem`: NaN, atoms closer than ``--min-distance``, a temperature above
   the canonical 1e-9 tail) after every interval; the interval at which one first trips, or none; and,
   after the run, the temperature checks of ``mlmd forecast`` (:class:`mlmd.dynamics.guards.ThermostatCheck`:
   T below the canonical 1e-9 tail, or the running mean over its window further than its tolerance from
   T₀) replayed on the recorded temperatures: the interval at which they would first trip, and the
   fraction of replica-intervals in the canonical band (T inside the 1e-9 tails and the running mean
   within the tolerance);
6. speed in simulated ps per wall-clock second (one replica): the bare forecaster rollout, MD with the
   reference calculator (``--calculator``, default the one the reference was generated with), MD with
   an equivariant potential (``--potential FILE``, or ``--equivariant-like``: an untrained
   ``equivariant`` model with the forecaster's cutoff, channels, lmax and layers), all through
   ``mlmd.md.run`` (BAOAB) at the reference MD time step on ``--device``; plus the aggregate rate of
   the batched stability rollout;
7. the sampling noise of the reference itself: each reference run against the other runs pooled (leave
   one out), with the same structure, VACF and D functions (``reference_noise``: mean and largest over
   the runs), so the forecaster's differences read against the run-to-run spread.

Forecaster modes: a stochastic forecaster (``model.stochastic = true``) is sampled by default
(``--sample``; seeded noise, :func:`integrators.rollout.forecast_noise`) or run on its mean (``--mean``, the
deterministic mode); ``--sample-displacement`` samples the displacement jointly with the velocities
instead of the velocities only (``potentials.forecaster``). ``--energy-calculator NAME`` (an ASE calculator, e.g. emt) or ``--energy-potential
MODEL.pt`` (an mlmd potential) turns on the energy-aware step of :func:`integrators.rollout.step`: the
forecast velocities are scaled so that U + K is conserved over the interval, before CSVR.

Smoke test (small inputs, a minute on one core)::

    mlmd generate water --trajectory --runs 2 --steps 400 --equilibration 0 -o ref/
    python scripts/evaluate_forecaster.py ref/ --model forecaster.pt --time 2ps --replicas 2 --threads 1
"""

import argparse
import json
import math
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from integrators import rollout
from integrators.state import conserved_components
from mlmd.constants import AMU_A2_PER_FS2_EV, FS_PS, KB_EV_PER_K
from mlmd.errors import MLMDError
from mlmd.dynamics.guards import ThermostatCheck
from mlmd.dynamics.potential import energy_monitor
from mlmd.dynamics.rollout_engine import stuck_replica
from mlmd.forecast import default_max_temperature_K, guard_problem, load_forecaster, parse_time_fs
from mlmd.io import atomic_write
from mlmd.trajectories import read_trajectory, trajectory_files

SPEED_OF_LIGHT_CM_PER_FS = 2.99792458e-5  # 1/(c · 1 fs) = 33356 cm⁻¹
A2_PER_FS_TO_CM2_PER_S = 0.1  # 1 Å²/fs = 1e-16 cm² / 1e-15 s


# --------------------------------------------------------------------------- one-step errors


def _interval_frames(run, forecaster) -> int:
    k = forecaster.interval_fs / run.frame_interval_fs
    if abs(k - round(k)) > 1e-6 or round(k) < 1:
        raise MLMDError(f"{run.source}: the forecaster's interval {forecaster.interval_fs} fs is not a multiple "
                        f"of the reference frame interval {run.frame_interval_fs} fs")
    return int(round(k))


def one_step_errors(runs, forecaster, max_pairs: int, device: str) -> dict:
    """Errors of the forecaster's displacement and velocities on reference pairs (t, t + τ_f), starts spread
    evenly over each run (neighbouring frames are strongly correlated)."""
    d_err, v_err, d_ref, v_ref, d_free, v_free = [], [], [], [], [], []
    spreads = {"displacement": [], "velocity": []}  # a stochastic forecaster's predicted sigma per atom
    n = len(runs[0].atomic_numbers)
    for run in runs:
        k = _interval_frames(run, forecaster)
        count = min(len(run) - k, max(1, max_pairs // len(runs)))
        starts = np.unique(np.linspace(0, len(run) - k - 1, count).astype(int))
        for chunk in np.array_split(starts, max(1, len(starts) // 64)):
            b = len(chunk)
            x = torch.as_tensor(run.positions[chunk].reshape(-1, 3), device=device)
            v = torch.as_tensor(run.velocities[chunk].reshape(-1, 3), device=device)
            state = _state(x, v, run, b, device)
            # The model sees wrapped positions (as in a rollout); displacements are unwrapped.
            out = forecaster.call(state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch,
                                  state.velocities)
            target_d = (run.positions[chunk + k] - run.positions[chunk]).reshape(-1, 3)
            target_v = run.velocities[chunk + k].reshape(-1, 3)
            v0 = run.velocities[chunk].reshape(-1, 3)
            for name in spreads:
                if f"{name}_spread" in out:
                    spreads[name].append(out[f"{name}_spread"].detach().cpu().double().numpy())
            d_err.append(out["displacement"].detach().cpu().double().numpy() - target_d)
            v_err.append(out["velocities"].detach().cpu().double().numpy() - target_v)
            d_ref.append(target_d)
            v_ref.append(target_v)
            d_free.append(v0 * forecaster.interval_fs - target_d)
            v_free.append(v0 - target_v)
    result = {}
    for name, err, ref, free, unit in (("displacement", d_err, d_ref, d_free, "A"),
                                       ("velocity", v_err, v_ref, v_free, "A_per_fs")):
        err, ref, free = np.concatenate(err), np.concatenate(ref), np.concatenate(free)
        rmse = float(np.sqrt(np.mean(err**2)))
        result[f"{name}_mae_{unit}"] = float(np.mean(np.abs(err)))
        result[f"{name}_rmse_{unit}"] = rmse
        result[f"{name}_reference_rms_{unit}"] = float(np.sqrt(np.mean(ref**2)))
        result[f"{name}_relative_rmse"] = rmse / float(np.sqrt(np.mean(ref**2)))
        result[f"{name}_rmse_vs_free_flight"] = rmse / float(np.sqrt(np.mean(free**2)))
        if spreads[name]:  # calibration: the predicted spread (RMS over atoms) against the mean's RMSE
            result[f"{name}_predicted_spread_{unit}"] = float(np.sqrt(np.mean(np.concatenate(spreads[name]) ** 2)))
    result["pairs"] = int(sum(len(e) for e in d_err) // n)
    result["runs"] = [run.source for run in runs]
    return result


def _state(x, v, run, replicas: int, device: str, kT: float = 0.0, rate: float = 0.0, seed: int = 0):
    """A rollout state; its ``constrained_dof`` counts the components a start at zero total (and, isolated,
    angular) momentum keeps at zero, as in ``mlmd forecast``, so CSVR and T use N_f = 3N - those."""
    n = len(run.atomic_numbers)
    cell = torch.as_tensor(np.broadcast_to(run.cell, (replicas, 3, 3)).copy(), dtype=torch.float64, device=device)
    state = rollout.init(
        x.to(torch.float64), v.to(torch.float64),
        torch.as_tensor(np.tile(run.masses, replicas) * AMU_A2_PER_FS2_EV, device=device),
        torch.as_tensor(np.tile(run.atomic_numbers, replicas), device=device),
        cell, torch.as_tensor(np.broadcast_to(run.pbc, (replicas, 3)).copy(), device=device),
        torch.arange(replicas, device=device).repeat_interleave(n), kT=kT, friction=rate,
        seeds=torch.arange(replicas, device=device) + seed)
    return state.replace(constrained_dof=conserved_components(state))


def _start_state(runs, forecaster, replicas: int, temperature_K: float, tau_fs: float, device: str, seed: int):
    """``replicas`` starting frames taken round-robin from the runs, evenly spaced in time."""
    picks = []
    for r in range(replicas):
        run = runs[r % len(runs)]
        slot, slots = r // len(runs), -(-replicas // len(runs))
        picks.append((run, int((len(run) - 1) * slot / max(slots, 1))))
    x = torch.as_tensor(np.concatenate([run.positions[i] for run, i in picks]), device=device)
    v = torch.as_tensor(np.concatenate([run.velocities[i] for run, i in picks]), device=device)
    return _state(x, v, runs[0], replicas, device, KB_EV_PER_K * temperature_K, 1.0 / tau_fs, seed)


# --------------------------------------------------------------------------- rollouts


def _guard(state, min_distance_A, bound):
    """The guards of ``mlmd forecast`` after one interval, the stuck-replica check of the energy-aware step
    included."""
    kelvin = rollout.kinetic_kT(state) / KB_EV_PER_K
    return kelvin, (guard_problem(state.positions, state.velocities, state.cell, state.pbc, state.batch, kelvin,
                                  min_distance_A, bound) or stuck_replica(state))


class Stepper:
    """One interval of the rollout under evaluation: ``rollout.step`` with the forecaster sampled (a stochastic
    forecaster unless ``sample`` is False) and, when ``energy`` names an ASE calculator (``("calculator", name)``)
    or an mlmd potential (``("potential", path)``), the energy-aware step with that U."""

    def __init__(self, forecaster, sample: bool = True, energy=None, atoms=None, device: str = "cpu"):
        self.forecaster, self.energy, self.atoms, self.device = forecaster, energy, atoms, device
        self.stochastic = bool(forecaster.stochastic and sample)
        self.interval_fs = forecaster.interval_fs
        self.call = forecaster.call
        self.monitors = {}

    def potential_energy(self, replicas: int):
        if self.energy is None:
            return None
        if replicas not in self.monitors:  # an ASE calculator holds one copy of the atoms per replica
            kind, name = self.energy
            self.monitors[replicas] = energy_monitor(self.atoms, potential=name if kind == "potential" else None,
                                                     calculator=name if kind == "calculator" else None,
                                                     replicas=replicas, device=self.device)
        return self.monitors[replicas]

    def __call__(self, state):
        return rollout.step(state, self.forecaster.call, self.forecaster.interval_fs, stochastic=self.stochastic,
                            potential_energy=self.potential_energy(state.n_replicas))


def _guarded_steps(state, forecaster, min_distance_A, bound, outcome: dict):
    """Yield ``(step, state, kelvin)`` after every interval that passes the guards; on the first that trips one,
    record ``guard_step`` and ``guard_problem`` in ``outcome`` and stop."""
    step = 0
    while True:
        step += 1
        new = forecaster(state)
        kelvin, problem = _guard(new, min_distance_A, bound)
        if problem:
            outcome.update(guard_step=step, guard_problem=problem)
            return
        state = new
        yield step, state, kelvin


def forecast_rollout(runs, forecaster, steps: int, replicas: int, temperature_K: float, tau_fs: float,
                     min_distance_A: float, device: str, seed: int = 0) -> dict:
    """CSVR rollout from ``replicas`` reference frames, recording every interval (for the observables)."""
    state = _start_state(runs, forecaster, replicas, temperature_K, tau_fs, device, seed)
    n = len(runs[0].atomic_numbers)
    bound = default_max_temperature_K(temperature_K, n)
    positions, velocities, temperatures = [state.unwrapped_positions().cpu().numpy()], [state.velocities.cpu().numpy()], []
    outcome = {"guard_step": None, "guard_problem": None}
    for _, state, kelvin in islice(_guarded_steps(state, forecaster, min_distance_A, bound, outcome), steps):
        positions.append(state.unwrapped_positions().cpu().numpy())
        velocities.append(state.velocities.cpu().numpy())
        temperatures.append(kelvin.cpu().numpy())
    return {"positions": np.array(positions).reshape(-1, replicas, n, 3),
            "velocities": np.array(velocities).reshape(-1, replicas, n, 3),
            "temperatures_K": np.array(temperatures).reshape(-1, replicas), "intervals": len(positions) - 1,
            **outcome}


def stability_rollout(runs, forecaster, max_steps: int, replicas: int, temperature_K: float, tau_fs: float,
                      min_distance_A: float, device: str, max_seconds: float, seed: int = 1000) -> dict:
    """Long CSVR rollout with the guards after every interval; keeps only the temperatures."""
    state = _start_state(runs, forecaster, replicas, temperature_K, tau_fs, device, seed)
    n = len(runs[0].atomic_numbers)
    bound = default_max_temperature_K(temperature_K, n)
    forecaster(state)  # builds the energy monitor for this many replicas outside the timing
    for _ in range(3):  # warm-up calls (TorchScript profiling, the guard's neighbour list) outside the timing
        forecaster.call(state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch, state.velocities)
        _guard(state, min_distance_A, bound)
    temperatures = np.zeros((max_steps, replicas))
    outcome = {"guard_step": None, "guard_problem": None}
    done = rejected = 0
    started = time.perf_counter()
    for step, state, kelvin in islice(_guarded_steps(state, forecaster, min_distance_A, bound, outcome), max_steps):
        temperatures[step - 1] = kelvin.cpu().numpy()
        done = step
        if state.rejected_streak is not None:
            rejected += int((state.rejected_streak > 0).sum())
        if step % 100 == 0 and time.perf_counter() - started > max_seconds:
            break
    seconds = time.perf_counter() - started
    return {"temperatures_K": temperatures[:done], "intervals": done, **outcome,
            "seconds": seconds, "replicas": replicas, "temperature_bound_K": bound,
            "rejected_fraction": rejected / max(done * replicas, 1) if forecaster.energy else None}


def forecaster_ps_per_second(runs, forecaster, steps: int, device: str, temperature_K: float, tau_fs: float) -> float:
    """Simulated ps per wall-clock second of one replica: bare ``rollout.step`` calls with CSVR, no guards."""
    state = _start_state(runs, forecaster, 1, temperature_K, tau_fs, device, 7)
    for _ in range(5):
        state = forecaster(state)
    started = time.perf_counter()
    for _ in range(steps):
        state = forecaster(state)
    float(state.positions.sum())  # synchronise
    return steps * forecaster.interval_fs * FS_PS / (time.perf_counter() - started)


# --------------------------------------------------------------------------- observables


def pair_distances(frames: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """All i<j distances (minimum image along periodic axes) of frames ``[T,N,3]``."""
    from ase.geometry import get_distances

    out = []
    n = frames.shape[1]
    upper = np.triu_indices(n, 1)
    for x in frames:
        _, d = get_distances(x, cell=cell, pbc=pbc)
        out.append(d[upper])
    return np.concatenate(out) if out else np.zeros(0)


def rdf(distances: np.ndarray, frames: int, atoms: int, volume: float, bins: np.ndarray) -> np.ndarray:
    """g(r) from i<j minimum-image distances of ``frames`` frames of ``atoms`` atoms in ``volume`` Å³."""
    counts, _ = np.histogram(distances, bins=bins)
    shell = 4.0 / 3.0 * np.pi * (bins[1:] ** 3 - bins[:-1] ** 3)
    ideal = frames * 0.5 * atoms * (atoms - 1) / volume * shell
    return counts / ideal


def histogram_l1(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    """∫|p_a - p_b| for two samples histogrammed on ``bins`` (0: identical, 2: disjoint)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    pa, _ = np.histogram(a, bins=bins, density=True)
    pb, _ = np.histogram(b, bins=bins, density=True)
    return float(np.sum(np.abs(pa - pb) * np.diff(bins)))


def bonds_and_angles(numbers, positions):
    """Bonded pairs (distance < 1.2 × sum of covalent radii) and bonded triplets (i-j-k, j the centre)."""
    from ase.data import covalent_radii

    radii = covalent_radii[np.asarray(numbers)]
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    bonded = (distance < 1.2 * (radii[:, None] + radii[None])) & ~np.eye(len(numbers), dtype=bool)
    pairs = [(i, j) for i in range(len(numbers)) for j in range(i + 1, len(numbers)) if bonded[i, j]]
    triplets = [(i, j, k) for j in range(len(numbers)) for i in np.flatnonzero(bonded[j])
                for k in np.flatnonzero(bonded[j]) if i < k]
    return pairs, triplets


def bond_samples(frames: np.ndarray, pairs, triplets):
    """Bond lengths (Å) and angles (degrees) over frames ``[T,N,3]`` (unwrapped molecules)."""
    lengths = np.concatenate([np.linalg.norm(frames[:, j] - frames[:, i], axis=-1) for i, j in pairs]) \
        if pairs else np.zeros(0)
    angles = []
    for i, j, k in triplets:
        a, b = frames[:, i] - frames[:, j], frames[:, k] - frames[:, j]
        cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        angles.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return lengths, (np.concatenate(angles) if angles else np.zeros(0))


def vacf(velocities: np.ndarray, max_lag: int) -> np.ndarray:
    """C(t) = <v(0)·v(t)> / <v·v> over atoms and time origins; ``velocities [T, R, N, 3]``."""
    t = velocities.shape[0]
    max_lag = min(max_lag, t - 1)
    norm = np.mean(np.sum(velocities * velocities, -1))
    return np.array([np.mean(np.sum(velocities[: t - lag] * velocities[lag:], -1)) / norm
                     for lag in range(max_lag + 1)])


def spectrum(correlation: np.ndarray, interval_fs: float):
    """Frequencies (cm⁻¹) and |FFT| of a Hann-windowed, mirrored correlation function (normalised to 1)."""
    window = np.hanning(2 * len(correlation) - 1)[len(correlation) - 1:]
    values = correlation * window
    mirrored = np.concatenate([values, values[-2:0:-1]])
    power = np.abs(np.fft.rfft(mirrored))
    frequency = np.fft.rfftfreq(len(mirrored), d=interval_fs) / SPEED_OF_LIGHT_CM_PER_FS
    return frequency, power / max(power.max(), 1e-300)


def msd(positions: np.ndarray, max_lag: int) -> np.ndarray:
    """Mean-square displacement (Å²) at lags 0..max_lag; ``positions [T, R, N, 3]`` unwrapped, the centre of
    mass of each replica removed."""
    positions = positions - positions.mean(axis=2, keepdims=True)
    t = positions.shape[0]
    max_lag = min(max_lag, t - 1)
    return np.array([np.mean(np.sum((positions[lag:] - positions[: t - lag]) ** 2, -1)) for lag in range(max_lag + 1)])


def diffusion_coefficient(msd_values: np.ndarray, interval_fs: float) -> float:
    """D (Å²/fs) = slope / 6 of a straight line through the MSD over the second half of its lags."""
    lags = np.arange(len(msd_values))
    half = lags >= len(lags) // 2
    if half.sum() < 2:
        return float("nan")
    slope = np.polyfit(lags[half] * interval_fs, msd_values[half], 1)[0]
    return float(slope / 6.0)


def reference_noise(ref_x: np.ndarray, ref_v: np.ndarray, frames_per_run, structure_of, interval_fs: float,
                    vacf_lags: int, msd_lags: int, periodic: bool) -> dict:
    """The sampling noise of every observable: each reference run against the other runs pooled (leave one
    out), with the same functions as forecaster-vs-reference. ``ref_x, ref_v [T, runs, N, 3]`` at the
    forecaster's interval; ``frames_per_run[r]`` the structure frames of run r; ``structure_of(a, b)`` the
    structure metrics of two frame sets. Per observable: the mean and the largest of the runs' values, so a
    forecaster's difference can be read against them (a tolerance of twice the spread)."""
    runs = ref_x.shape[1]
    if runs < 2:
        return {"skipped": "one reference run: no run-to-run spread"}
    values: dict = {}
    for r in range(runs):
        others = [q for q in range(runs) if q != r]
        row = structure_of(frames_per_run[r], np.concatenate([frames_per_run[q] for q in others]))
        c_one, c_rest = vacf(ref_v[:, r:r + 1], vacf_lags), vacf(ref_v[:, others], vacf_lags)
        row["vacf_rms_difference"] = float(np.sqrt(np.mean((c_one - c_rest) ** 2)))
        if periodic:
            d_one = diffusion_coefficient(msd(ref_x[:, r:r + 1], msd_lags), interval_fs)
            d_rest = diffusion_coefficient(msd(ref_x[:, others], msd_lags), interval_fs)
            row["diffusion_ratio"] = d_one / d_rest if d_rest else math.nan
        for key, value in row.items():
            values.setdefault(key, []).append(value)
    return {"runs": runs, **{key: {"mean": float(np.mean(v)), "max": float(np.max(v)),
                                   "min": float(np.min(v))} for key, v in values.items()}}


def kinetic_temperatures(velocities: np.ndarray, masses_amu: np.ndarray, dof: int) -> np.ndarray:
    """T = sum m v² / (N_f k_B) of velocities ``[..., N, 3]`` Å/fs (N_f as the thermostat counts it)."""
    kinetic = 0.5 * np.sum(masses_amu[:, None] * AMU_A2_PER_FS2_EV * velocities**2, axis=(-1, -2))
    return 2.0 * kinetic / (dof * KB_EV_PER_K)


def temperature_checks(temperatures: np.ndarray, temperature_K: float, free_atoms: int, tau_fs: float,
                       interval_fs: float) -> dict:
    """Replay ``mlmd forecast``'s temperature checks (lower bound, running-mean drift) on ``[T, R]`` kelvin: the
    first interval at which they trip (or None) and the fraction of replica-intervals in the canonical band."""
    check = ThermostatCheck.for_run(temperature_K, free_atoms, tau_fs / interval_fs)
    lower, upper = check.min_temperature_K, default_max_temperature_K(temperature_K, free_atoms)
    first, problem = None, None
    inside = np.zeros_like(temperatures, dtype=bool)
    history = []
    for step, row in enumerate(temperatures, start=1):
        found = check.problem(row, step)
        if found and first is None:
            first, problem = step, found
        history.append(row)
        running = np.mean(history[-check.window:], axis=0)
        inside[step - 1] = (row > lower) & (row < upper) & (np.abs(running - temperature_K) <= check.tolerance_K)
    counted = inside[check.window:] if len(inside) > check.window else inside
    return {"window_intervals": check.window, "tolerance_K": check.tolerance_K, "lower_bound_K": lower,
            "upper_bound_K": upper, "first_trip_interval": first, "first_trip": problem,
            "fraction_in_band": float(np.mean(counted)) if counted.size else math.nan,
            "replica_intervals_in_band": int(np.sum(counted))}


# --------------------------------------------------------------------------- speed of MD


def md_ps_per_second(atoms, timestep_fs: float, steps: int, device: str, model=None, calculator=None,
                     temperature_K: float = 300.0) -> float:
    """Simulated ps per wall-clock second of ``mlmd md`` (BAOAB) with a model or an ASE calculator; a short
    run first warms the model up (TorchScript profiling) so that the timed run measures steady state. Only the
    cost is measured, so the guards are off: an untrained stand-in potential (``--equivariant-like``) lets
    atoms collide in a hot liquid, and a call costs the same either way."""
    from mlmd.md import run

    unguarded = {"min_distance_A": None, "max_energy_jump_eV_per_atom": None, "max_temperature_K": None}
    if model is not None:
        from mlmd.model import load_model

        model = load_model(model, device=device)
        run(atoms, model=model, timestep_fs=timestep_fs, steps=10, stride=10, device=device, plot=False,
            temperature_K=temperature_K, **unguarded)
    result = run(atoms, model=model, calculator=calculator, timestep_fs=timestep_fs, steps=steps, stride=steps,
                 device=device if model is not None else "cpu", plot=False, temperature_K=temperature_K,
                 **unguarded)
    return result.ns_per_day / 86400.0 * 1e3


def untrained_equivariant(metadata: dict, path: Path) -> Path:
    """Export an untrained ``equivariant`` potential with the forecaster's species, cutoff and width."""
    from mlmd.model import export_model
    from potentials import FAMILIES

    config = metadata.get("config", {})
    keys = ("cutoff", "channels", "lmax", "num_layers", "num_basis", "radial_hidden", "avg_num_neighbors")
    kwargs = {key: config[key] for key in keys if key in config}
    kwargs.setdefault("cutoff", metadata["cutoff"])
    torch.manual_seed(0)
    module = FAMILIES["equivariant"](species=metadata["species"], **kwargs)
    if metadata.get("dtype") == "float64":
        module = module.double()
    export_model(module, path)
    return path


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", nargs="+", help="reference trajectory files or folders")
    parser.add_argument("--model", required=True, help="exported forecaster")
    parser.add_argument("--held-out", nargs="+", help="runs for the one-step errors (default: the last reference run)")
    parser.add_argument("--potential", help="an equivariant (or any mlmd) potential to time MD with")
    parser.add_argument("--equivariant-like", action="store_true",
                        help="time MD with an untrained equivariant potential of the forecaster's width")
    parser.add_argument("--calculator", help="reference calculator for MD timing (default: the reference's)")
    parser.add_argument("--time", help="rollout length for the observables (default: one reference run)")
    parser.add_argument("--replicas", type=int, help="rollout replicas (default: the number of reference runs)")
    parser.add_argument("--temperature", type=float, help="CSVR target in K (default: the reference's)")
    parser.add_argument("--tau", help="CSVR relaxation time (default: the reference's, else 1ps)")
    parser.add_argument("--min-distance", type=float, default=0.5, help="overlap guard in Å (default 0.5)")
    parser.add_argument("--pairs", type=int, default=1024, help="held-out pairs for one-step errors")
    parser.add_argument("--stability-steps", type=int, default=100_000, help="intervals of the stability run")
    parser.add_argument("--stability-replicas", type=int, default=8)
    parser.add_argument("--stability-minutes", type=float, default=10.0, help="wall-time cap of the stability run")
    parser.add_argument("--speed-steps", type=int, default=200, help="forecaster intervals timed (one replica)")
    parser.add_argument("--md-steps", type=int, default=200, help="MD steps timed per engine (default 200)")
    parser.add_argument("--max-frames", type=int, default=500, help="frames used for histograms")
    parser.add_argument("--vacf-window", default="1ps", help="VACF lags compared (default 1ps)")
    parser.add_argument("--msd-window", default="2ps", help="MSD lags for the diffusion coefficient (default 2ps)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sample", dest="sample", action="store_true", default=True,
                      help="sample a stochastic forecaster (the default)")
    mode.add_argument("--mean", dest="sample", action="store_false",
                      help="run a stochastic forecaster on its mean (the deterministic mode)")
    parser.add_argument("--sample-displacement", action="store_true",
                        help="sample the displacement jointly with the velocities (default: velocities only)")
    energy = parser.add_mutually_exclusive_group()
    energy.add_argument("--energy-calculator", metavar="NAME",
                        help="energy-aware step with this ASE calculator as U (emt, lj, ...)")
    energy.add_argument("--energy-potential", metavar="MODEL", help="energy-aware step with this mlmd potential as U")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="forecaster_evaluation.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    wall = time.perf_counter()

    runs = [read_trajectory(path) for path in trajectory_files(args.reference)]
    held_out = [read_trajectory(path) for path in trajectory_files(args.held_out)] if args.held_out else runs[-1:]
    from mlmd.model import load_model

    model = load_model(args.model, device=args.device)
    if args.sample_displacement:
        if not model.metadata.get("stochastic"):
            parser.error("--sample-displacement needs a stochastic forecaster")
        model.module.sample_displacement = True  # a plain attribute of the exported module
    loaded = load_forecaster(model, device=args.device)
    metadata = model.metadata
    reference = runs[0]
    settings = reference.settings
    from ase import Atoms

    atoms = Atoms(numbers=reference.atomic_numbers, positions=reference.positions[-1], cell=reference.cell,
                  pbc=reference.pbc, masses=reference.masses)
    energy = (("calculator", args.energy_calculator) if args.energy_calculator else
              ("potential", args.energy_potential) if args.energy_potential else None)
    forecaster = Stepper(loaded, args.sample, energy, atoms, args.device)
    temperature_K = args.temperature or float(settings.get("temperature_K", 300.0))
    friction = float(settings.get("friction_per_ps", 1.0) or 1.0)
    tau_fs = parse_time_fs(args.tau) if args.tau else 1000.0 / friction
    shortest = min(len(run) for run in runs)
    total_fs = parse_time_fs(args.time) if args.time else (shortest - 1) * reference.frame_interval_fs
    replicas = args.replicas or len(runs)
    steps = max(1, int(round(total_fs / forecaster.interval_fs)))
    k = _interval_frames(reference, forecaster)
    n = len(reference.atomic_numbers)
    periodic = bool(reference.pbc.any())
    report = {"model": str(args.model), "reference": [run.source for run in runs], "interval_fs": forecaster.interval_fs,
              "interval_steps": int(round(forecaster.interval_fs / reference.timestep_fs)),
              "reference_timestep_fs": reference.timestep_fs,
              "reference_frame_interval_fs": reference.frame_interval_fs, "atoms": n,
              "system": settings.get("system"), "config": settings.get("config"),
              "calculator": settings.get("calculator"),
              "temperature_K": temperature_K, "tau_fs": tau_fs,
              "model_config": metadata.get("config", {}),
              "reference_runs": len(runs), "reference_run_ps": (shortest - 1) * reference.frame_interval_fs * FS_PS,
              "rollout_replicas": replicas, "rollout_ps": steps * forecaster.interval_fs * FS_PS,
              "stochastic_model": bool(loaded.stochastic), "sampled": forecaster.stochastic,
              "energy_aware": None if energy is None else f"{energy[0]} {energy[1]}"}
    if periodic:
        report["density_atoms_per_A3"] = n / abs(float(np.linalg.det(reference.cell)))
        report["density_g_per_cm3"] = float(np.sum(reference.masses)) * 1.66053906660 / abs(float(np.linalg.det(reference.cell)))

    print(f"one-step errors on {len(held_out)} held-out run(s) ...", flush=True)
    report["one_step"] = one_step_errors(held_out, forecaster, args.pairs, args.device)

    print(f"rollout: {replicas} replicas x {steps} intervals ...", flush=True)
    roll = forecast_rollout(runs, forecaster, steps, replicas, temperature_K, tau_fs, args.min_distance, args.device,
                            args.seed)
    report["rollout_guard"] = {"intervals_done": roll["intervals"], "guard_step": roll["guard_step"],
                               "guard_problem": roll["guard_problem"]}

    # Reference frames at the forecaster's interval, as [T, runs, N, 3] (runs cut to the shortest).
    ref_x = np.stack([run.positions[:shortest:k] for run in runs], axis=1)
    ref_v = np.stack([run.velocities[:shortest:k] for run in runs], axis=1)
    frames_f = roll["positions"][1:].reshape(-1, n, 3)
    frames_r = np.concatenate([run.positions for run in runs])
    pick = lambda frames: frames[np.linspace(0, len(frames) - 1, min(args.max_frames, len(frames))).astype(int)] \
        if len(frames) else frames
    frames_f, frames_r = pick(frames_f), pick(frames_r)
    structure = {"frames": [len(frames_f), len(frames_r)]}
    if periodic:
        cell = reference.cell
        volume = abs(float(np.linalg.det(cell)))
        widths = [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
        r_max = 0.5 * min(widths)
    else:
        r_max, volume = 6.0, None
    bins = np.linspace(0.5, r_max, int(round((r_max - 0.5) / 0.05)) + 1)
    dist_f = pair_distances(frames_f, reference.cell, reference.pbc)
    dist_r = pair_distances(frames_r, reference.cell, reference.pbc)
    structure["pair_distance_l1"] = histogram_l1(dist_f, dist_r, bins)
    if not periodic:
        pairs, triplets = bonds_and_angles(reference.atomic_numbers, reference.positions[0])

    def compare_structure(frames_a: np.ndarray, frames_b: np.ndarray) -> dict:
        """The headline structure differences of two frame sets (RDF for cells, bonds and angles otherwise)."""
        dist_a = pair_distances(frames_a, reference.cell, reference.pbc)
        dist_b = pair_distances(frames_b, reference.cell, reference.pbc)
        row = {"pair_distance_l1": histogram_l1(dist_a, dist_b, bins)}
        if periodic:
            g_a = rdf(dist_a, len(frames_a), n, volume, bins)
            g_b = rdf(dist_b, len(frames_b), n, volume, bins)
            beyond_a = 0.5 * (bins[1:] + bins[:-1]) > 1.5
            row["rdf_max_abs_difference"] = float(np.max(np.abs(g_a - g_b)[beyond_a]))
        else:
            lengths_a, angles_a = bond_samples(frames_a, pairs, triplets)
            lengths_b, angles_b = bond_samples(frames_b, pairs, triplets)
            row["bond_length_l1"] = histogram_l1(lengths_a, lengths_b, np.linspace(0.7, 2.0, 131))
            row["bond_angle_l1"] = histogram_l1(angles_a, angles_b, np.linspace(60, 180, 121))
        return row
    if periodic:
        g_f = rdf(dist_f, len(frames_f), n, volume, bins)
        g_r = rdf(dist_r, len(frames_r), n, volume, bins)
        centres = 0.5 * (bins[1:] + bins[:-1])
        beyond = centres > 1.5
        structure.update({
            "rdf_r_max_A": float(r_max), "rdf_bin_A": float(bins[1] - bins[0]),
            "rdf_max_abs_difference": float(np.max(np.abs(g_f - g_r)[beyond])) if len(frames_f) else math.nan,
            "rdf_first_peak_A": [float(centres[np.argmax(g_f)]) if len(frames_f) else math.nan,
                                 float(centres[np.argmax(g_r)])],
            "rdf_first_peak_height": [float(np.max(g_f)) if len(frames_f) else math.nan, float(np.max(g_r))],
            "rdf": {"r_A": centres.tolist(), "forecaster": g_f.tolist(), "reference": g_r.tolist()}})
    else:
        lengths_f, angles_f = bond_samples(frames_f, pairs, triplets)
        lengths_r, angles_r = bond_samples(frames_r, pairs, triplets)
        structure.update({
            "bonds": len(pairs), "angles": len(triplets),
            "bond_length_l1": histogram_l1(lengths_f, lengths_r, np.linspace(0.7, 2.0, 131)),
            "bond_angle_l1": histogram_l1(angles_f, angles_r, np.linspace(60, 180, 121)),
            "bond_length_mean_A": [float(np.mean(lengths_f)) if len(lengths_f) else math.nan, float(np.mean(lengths_r))],
            "bond_length_std_A": [float(np.std(lengths_f)) if len(lengths_f) else math.nan, float(np.std(lengths_r))],
            "bond_angle_mean_deg": [float(np.mean(angles_f)) if len(angles_f) else math.nan, float(np.mean(angles_r))],
            "bond_angle_std_deg": [float(np.std(angles_f)) if len(angles_f) else math.nan, float(np.std(angles_r))]})
    report["structure"] = structure

    report["dynamics"] = {"skipped": f"the rollout stopped after {roll['intervals']} intervals (guard)"}
    if roll["intervals"] >= 4:
        available = min(roll["positions"].shape[0], ref_v.shape[0])
        vacf_lags = max(2, min(int(round(parse_time_fs(args.vacf_window) / forecaster.interval_fs)), available // 2))
        msd_lags = max(2, min(int(round(parse_time_fs(args.msd_window) / forecaster.interval_fs)), available // 2))
        c_f, c_r = vacf(roll["velocities"], vacf_lags), vacf(ref_v, vacf_lags)
        m_c = min(len(c_f), len(c_r))
        freq_f, power_f = spectrum(c_f[:m_c], forecaster.interval_fs)
        freq_r, power_r = spectrum(c_r[:m_c], forecaster.interval_fs)
        msd_f, msd_r = msd(roll["positions"], msd_lags), msd(ref_x, msd_lags)
        m_msd = min(len(msd_f), len(msd_r))
        # A diffusion coefficient only for periodic systems (an isolated molecule's MSD plateaus).
        d_f, d_r = (diffusion_coefficient(msd_f[:m_msd], forecaster.interval_fs),
                    diffusion_coefficient(msd_r[:m_msd], forecaster.interval_fs)) if periodic else (math.nan, math.nan)
        report["dynamics"] = {
            "vacf_lags": int(m_c), "vacf_window_fs": float((m_c - 1) * forecaster.interval_fs),
            "vacf_rms_difference": float(np.sqrt(np.mean((c_f[:m_c] - c_r[:m_c]) ** 2))),
            "vacf_max_abs_difference": float(np.max(np.abs(c_f[:m_c] - c_r[:m_c]))),
            "spectrum_peak_cm1": [float(freq_f[np.argmax(power_f[1:]) + 1]), float(freq_r[np.argmax(power_r[1:]) + 1])],
            "spectrum_l1": float(np.sum(np.abs(power_f / power_f.sum() - power_r / power_r.sum()))),
            "nyquist_cm1": float(freq_f[-1]), "spectrum_resolution_cm1": float(freq_f[1]),
            "msd_at_max_lag_A2": [float(msd_f[m_msd - 1]), float(msd_r[m_msd - 1])],
            "msd_lag_fs": float((m_msd - 1) * forecaster.interval_fs),
            "diffusion_cm2_per_s": [d_f * A2_PER_FS_TO_CM2_PER_S, d_r * A2_PER_FS_TO_CM2_PER_S],
            "diffusion_ratio": d_f / d_r if d_r and math.isfinite(d_r) else math.nan,
            "vacf": {"forecaster": c_f.tolist(), "reference": c_r.tolist()},
            "spectrum": {"cm1": freq_f.tolist(), "forecaster": power_f.tolist(), "reference": power_r.tolist()},
            "msd_A2": {"forecaster": msd_f.tolist(), "reference": msd_r.tolist()}}

    ref_vacf_lags = max(2, min(int(round(parse_time_fs(args.vacf_window) / forecaster.interval_fs)), ref_v.shape[0] // 2))
    ref_msd_lags = max(2, min(int(round(parse_time_fs(args.msd_window) / forecaster.interval_fs)), ref_x.shape[0] // 2))
    # each run contributes as many frames as the forecaster-vs-reference comparison uses on each side
    report["reference_noise"] = reference_noise(
        ref_x, ref_v, [pick(run.positions) for run in runs],
        compare_structure, forecaster.interval_fs, ref_vacf_lags, ref_msd_lags, periodic)

    print(f"stability: {args.stability_replicas} replicas, up to {args.stability_steps} intervals or "
          f"{args.stability_minutes} min ...", flush=True)
    stable = stability_rollout(runs, forecaster, args.stability_steps, args.stability_replicas, temperature_K, tau_fs,
                               args.min_distance, args.device, 60.0 * args.stability_minutes, args.seed + 1000)
    report["stability"] = {
        "replicas": stable["replicas"], "intervals_requested": args.stability_steps,
        "intervals_done": stable["intervals"], "replica_intervals": stable["replicas"] * stable["intervals"],
        "guard_step": stable["guard_step"], "guard_problem": stable["guard_problem"],
        "stable_ps_per_replica": stable["intervals"] * forecaster.interval_fs * FS_PS,
        "stable_ps_total": stable["replicas"] * stable["intervals"] * forecaster.interval_fs * FS_PS,
        "reference_md_steps_equivalent_per_replica": stable["intervals"] * int(round(forecaster.interval_fs / reference.timestep_fs)),
        "temperature_bound_K": stable["temperature_bound_K"], "wall_s": stable["seconds"],
        "rejected_fraction": stable["rejected_fraction"],
        "min_distance_A": args.min_distance}

    temperatures = stable["temperatures_K"][len(stable["temperatures_K"]) // 5:].reshape(-1)  # drop the first 20 %
    start = _start_state(runs, forecaster, len(runs), temperature_K, tau_fs, args.device, 0)
    dof = int(rollout.degrees_of_freedom(start)[0])  # the rollout's N_f (its start: reference frames)
    first_frames = _state(torch.as_tensor(np.concatenate([run.positions[0] for run in runs])),
                          torch.as_tensor(np.concatenate([run.velocities[0] for run in runs])), reference, len(runs),
                          args.device)
    ref_dof = [int(d) for d in rollout.degrees_of_freedom(first_frames)]
    ref_t = np.concatenate([kinetic_temperatures(run.velocities, reference.masses, d) for run, d in zip(runs, ref_dof)])
    report["stability"]["temperature_checks"] = temperature_checks(
        stable["temperatures_K"], temperature_K, n, tau_fs, forecaster.interval_fs)
    if len(temperatures) > 1:
        from scipy import stats

        canonical = stats.gamma(dof / 2, scale=2 * temperature_K / dof)
        report["temperature"] = {
            "definition": "T = 2K/(N_f k_B)", "dof": dof, "reference_dof": ref_dof,
            "mean_K": float(np.mean(temperatures)), "canonical_mean_K": temperature_K,
            "reference_mean_K": float(np.mean(ref_t)),
            "variance_K2": float(np.var(temperatures)), "canonical_variance_K2": 2 * temperature_K**2 / dof,
            "variance_ratio": float(np.var(temperatures)) / (2 * temperature_K**2 / dof),
            "mean_relative_error": float(np.mean(temperatures)) / temperature_K - 1.0,
            "reference_variance_K2": float(np.var(ref_t)),
            "ks_distance": float(stats.kstest(temperatures, canonical.cdf).statistic),
            "reference_ks_distance": float(stats.kstest(ref_t, canonical.cdf).statistic),
            "ks_distance_vs_reference": float(stats.ks_2samp(temperatures, ref_t).statistic),
            "samples": int(len(temperatures)), "reference_samples": int(len(ref_t))}

    atoms.set_velocities(reference.velocities[-1] / 0.09822694788464063)  # Å/fs -> ASE velocity units
    print("speed ...", flush=True)
    speed = {"md_timestep_fs": reference.timestep_fs,
             "forecaster_ps_per_s": forecaster_ps_per_second(runs, forecaster, args.speed_steps, args.device,
                                                             temperature_K, tau_fs),
             "forecaster_batched_aggregate_ps_per_s": stable["replicas"] * stable["intervals"] * forecaster.interval_fs
             * FS_PS / stable["seconds"] if stable["seconds"] > 0 else math.nan,
             "forecaster_batched_replicas": stable["replicas"]}
    calculator = args.calculator or settings.get("calculator")
    if calculator and args.md_steps > 0:
        speed["reference_md_ps_per_s"] = md_ps_per_second(atoms, reference.timestep_fs, args.md_steps, args.device,
                                                          calculator=calculator, temperature_K=temperature_K)
        speed["reference_calculator"] = calculator
        speed["speedup_vs_reference_md"] = speed["forecaster_ps_per_s"] / speed["reference_md_ps_per_s"]
    potential = args.potential
    if potential is None and args.equivariant_like:
        potential = untrained_equivariant(metadata, Path(args.json).with_suffix(".equivariant.pt"))
    if potential and args.md_steps > 0:
        speed["potential_md_ps_per_s"] = md_ps_per_second(atoms, reference.timestep_fs, args.md_steps, args.device,
                                                          model=potential, temperature_K=temperature_K)
        speed["potential"] = str(potential)
        speed["speedup_vs_potential_md"] = speed["forecaster_ps_per_s"] / speed["potential_md_ps_per_s"]
    report["speed"] = speed
    report["evaluation_wall_s"] = time.perf_counter() - wall

    _print_table(report)
    with atomic_write(args.json) as stream:
        json.dump(report, stream, indent=1, default=float)
    print(f"wrote {args.json}")
    return 0


def _print_table(report: dict) -> None:
    rows = [("forecaster mode", ("sampled" if report["sampled"] else "mean" if report["stochastic_model"]
                                 else "deterministic") + (f", energy-aware ({report['energy_aware']})"
                                                          if report["energy_aware"] else ""))]
    one = report["one_step"]
    rows += [("one-step displacement RMSE (Å)", f"{one['displacement_rmse_A']:.4g}"),
             ("one-step displacement relative RMSE", f"{one['displacement_relative_rmse']:.3g}"),
             ("one-step displacement RMSE / free flight", f"{one['displacement_rmse_vs_free_flight']:.3g}"),
             ("one-step velocity RMSE (Å/fs)", f"{one['velocity_rmse_A_per_fs']:.4g}"),
             ("one-step velocity relative RMSE", f"{one['velocity_relative_rmse']:.3g}"),
             ("one-step velocity RMSE / free flight", f"{one['velocity_rmse_vs_free_flight']:.3g}"),
             ("held-out pairs", str(one["pairs"]))]
    for name, unit in (("displacement", "Å"), ("velocity", "Å/fs")):
        key = f"{name}_predicted_spread_{'A' if unit == 'Å' else 'A_per_fs'}"
        if key in one:
            rows.append((f"one-step predicted {name} spread, RMS sigma ({unit})", f"{one[key]:.4g}"))
    guard = report["rollout_guard"]
    rows.append(("observable rollout", f"{guard['intervals_done']} intervals" + (
        f" (guard at interval {guard['guard_step']}: {guard['guard_problem']})" if guard["guard_step"] else "")))
    for key, value in report["structure"].items():
        if key == "rdf":
            continue
        rows.append((f"structure: {key}", json.dumps(value, default=float) if isinstance(value, list) else
                     f"{value:.4g}" if isinstance(value, float) else str(value)))
    dynamics = report["dynamics"]
    if "skipped" in dynamics:
        dynamics = {key: math.nan for key in ("vacf_window_fs", "vacf_rms_difference", "vacf_max_abs_difference",
                                              "nyquist_cm1", "spectrum_l1", "msd_lag_fs", "diffusion_ratio")}
        dynamics.update(spectrum_peak_cm1=[math.nan] * 2, msd_at_max_lag_A2=[math.nan] * 2,
                        diffusion_cm2_per_s=[math.nan] * 2)
    rows += [(f"VACF RMS difference over {dynamics['vacf_window_fs']:.0f} fs", f"{dynamics['vacf_rms_difference']:.3g}"),
             ("VACF max abs difference", f"{dynamics['vacf_max_abs_difference']:.3g}"),
             ("spectrum peak cm⁻¹ (forecaster, reference)",
              ", ".join(f"{v:.0f}" for v in dynamics["spectrum_peak_cm1"]) + f" (Nyquist {dynamics['nyquist_cm1']:.0f})"),
             ("spectrum L1", f"{dynamics['spectrum_l1']:.3g}"),
             (f"MSD at {dynamics['msd_lag_fs']:.0f} fs (Å², forecaster, reference)",
              ", ".join(f"{v:.4g}" for v in dynamics["msd_at_max_lag_A2"])),
             ("D (cm²/s, forecaster, reference)", ", ".join(f"{v:.3g}" for v in dynamics["diffusion_cm2_per_s"])),
             ("D ratio", f"{dynamics['diffusion_ratio']:.3g}")]
    noise = report.get("reference_noise", {})
    for key, value in noise.items():
        if isinstance(value, dict):
            rows.append((f"reference run vs the others: {key} (mean, min, max)",
                         f"{value['mean']:.3g}, {value['min']:.3g}, {value['max']:.3g}"))
    stability = report["stability"]
    rows.append(("stability", f"{stability['replicas']} replicas x {stability['intervals_done']} intervals "
                 f"({stability['stable_ps_per_replica']:.4g} ps each)" + (
                     f", guard at interval {stability['guard_step']}: {stability['guard_problem']}"
                     if stability["guard_step"] else ", no guard tripped")))
    if stability.get("rejected_fraction") is not None:
        rows.append(("stability: fraction of replica-intervals the energy-aware step rejected",
                     f"{stability['rejected_fraction']:.3g}"))
    checks = stability.get("temperature_checks")
    if checks:
        rows += [("stability: fraction of replica-intervals in the canonical band",
                  f"{checks['fraction_in_band']:.3g} ({checks['replica_intervals_in_band']} replica-intervals)"),
                 ("stability: temperature checks of mlmd forecast would trip at",
                  f"interval {checks['first_trip_interval']}: {checks['first_trip']}" if checks["first_trip_interval"]
                  else "never")]
    if "temperature" in report:
        t = report["temperature"]
        rows += [("temperature mean K (rollout, reference, canonical)",
                  f"{t['mean_K']:.1f}, {t['reference_mean_K']:.1f}, {t['canonical_mean_K']:.1f}"),
                 ("temperature variance K² (rollout, reference, canonical 2T²/N_f)",
                  f"{t['variance_K2']:.4g}, {t['reference_variance_K2']:.4g}, {t['canonical_variance_K2']:.4g} "
                  f"(ratio {t['variance_ratio']:.3g}, N_f {t['dof']})"),
                 ("temperature KS vs Gamma (rollout, reference)", f"{t['ks_distance']:.3g}, {t['reference_ks_distance']:.3g}"),
                 ("temperature KS rollout vs reference", f"{t['ks_distance_vs_reference']:.3g} ({t['samples']} samples)")]
    for key, value in report["speed"].items():
        rows.append((f"speed: {key}", f"{value:.4g}" if isinstance(value, float) else str(value)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MLMDError as exc:
        print(f"evaluate_forecaster: error: {exc}", file=sys.stderr)
        sys.exit(2)
