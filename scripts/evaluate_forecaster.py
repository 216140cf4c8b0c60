"""Evaluate a trained trajectory forecaster against reference MD trajectories.

Given reference runs (``mlmd generate SYSTEM --trajectory``: HDF5 or extended XYZ, read by
:func:`mlmd.trajectories.read_trajectory`) and an exported forecaster, prints a table and writes JSON:

1. one-step errors on held-out pairs (frame t -> t + τ_f): MAE and RMSE of the displacement (Å) and of
   the new velocities (Å/fs), and the RMSE relative to the RMS of the reference;
2. structure over a CSVR rollout of ``--replicas`` replicas for ``--time``: the pair-distance histogram
   (the radial distribution function g(r) for periodic systems), bond-length and bond-angle histograms
   (bonds from covalent radii × 1.2 in the first frame), each compared with the reference as the L1
   distance between normalised histograms, ∫|p_f - p_ref| dr ∈ [0, 2];
3. dynamics: velocity autocorrelation C(t) = <v(0)·v(t)>/<v·v> and its spectrum (|FFT|, cm⁻¹), the
   reference subsampled to the forecaster's interval so both share one Nyquist frequency; mean-square
   displacement of the unwrapped positions;
4. temperature: mean and variance of the rollout's kinetic temperature against the canonical
   Gamma(N_f/2) values <T> = T₀, Var T = 2 T₀²/N_f, and the KS distance;
5. stability: the interval at which a guard (:func:`mlmd.forecast.guard_problem`: NaN, atoms closer than
   ``--min-distance``, a temperature above the canonical 1e-9 tail) first trips, or none;
6. speed in simulated ps per wall-clock second: the forecaster rollout, MD with the reference calculator
   (``--calculator``, default the one the reference was generated with), and MD with an equivariant
   potential (``--potential``), all through ``mlmd.md.run``/the rollout engine on ``--device``.

Smoke test (small inputs, a minute on one core)::

    mlmd generate water --trajectory --runs 2 --steps 400 --equilibration 0 -o ref/
    python scripts/evaluate_forecaster.py ref/ --model forecaster.pt --time 2ps --replicas 2 --threads 1
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from integrators import rollout
from mlmd.constants import AMU_A2_PER_FS2_EV, FS_PS, KB_EV_PER_K
from mlmd.errors import MLMDError
from mlmd.forecast import default_max_temperature_K, guard_problem, load_forecaster, parse_time_fs
from mlmd.io import atomic_write
from mlmd.trajectories import read_trajectory, trajectory_files

SPEED_OF_LIGHT_CM_PER_FS = 2.99792458e-5  # 1/(c · 1 fs) = 33356 cm⁻¹


# --------------------------------------------------------------------------- one-step errors


def one_step_errors(runs, forecaster, max_pairs: int, device: str) -> dict:
    """Errors of the forecaster's displacement and velocities on reference pairs (t, t + τ_f)."""
    d_err, v_err, d_ref, v_ref = [], [], [], []
    for run in runs:
        k = forecaster.interval_fs / run.frame_interval_fs
        if abs(k - round(k)) > 1e-6 or round(k) < 1:
            raise MLMDError(f"{run.source}: the forecaster's interval {forecaster.interval_fs} fs is not a multiple "
                            f"of the reference frame interval {run.frame_interval_fs} fs")
        k = int(round(k))
        starts = np.arange(0, len(run) - k)[: max(1, max_pairs // len(runs))]
        for chunk in np.array_split(starts, max(1, len(starts) // 64)):
            b = len(chunk)
            x = torch.as_tensor(run.positions[chunk].reshape(-1, 3), device=device)
            v = torch.as_tensor(run.velocities[chunk].reshape(-1, 3), device=device)
            state = _state(x, v, run, b, device)
            out = forecaster.call(state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch,
                                  state.velocities)
            target_d = (run.positions[chunk + k] - run.positions[chunk]).reshape(-1, 3)
            target_v = run.velocities[chunk + k].reshape(-1, 3)
            d_err.append(out["displacement"].detach().cpu().double().numpy() - target_d)
            v_err.append(out["velocities"].detach().cpu().double().numpy() - target_v)
            d_ref.append(target_d)
            v_ref.append(target_v)
    result = {}
    for name, err, ref, unit in (("displacement", d_err, d_ref, "A"), ("velocity", v_err, v_ref, "A_per_fs")):
        err, ref = np.concatenate(err), np.concatenate(ref)
        rmse = float(np.sqrt(np.mean(err**2)))
        result[f"{name}_mae_{unit}"] = float(np.mean(np.abs(err)))
        result[f"{name}_rmse_{unit}"] = rmse
        result[f"{name}_relative_rmse"] = rmse / float(np.sqrt(np.mean(ref**2)))
    result["pairs"] = int(sum(len(e) for e in d_err) // len(runs[0].atomic_numbers))
    return result


def _state(x, v, run, replicas: int, device: str, kT: float = 0.0, rate: float = 0.0, seed: int = 0):
    n = len(run.atomic_numbers)
    cell = torch.as_tensor(np.broadcast_to(run.cell, (replicas, 3, 3)).copy(), dtype=torch.float64, device=device)
    return rollout.init(
        x.to(torch.float64), v.to(torch.float64),
        torch.as_tensor(np.tile(run.masses, replicas) * AMU_A2_PER_FS2_EV, device=device),
        torch.as_tensor(np.tile(run.atomic_numbers, replicas), device=device),
        cell, torch.as_tensor(np.broadcast_to(run.pbc, (replicas, 3)).copy(), device=device),
        torch.arange(replicas, device=device).repeat_interleave(n), kT=kT, friction=rate,
        seeds=torch.arange(replicas, device=device) + seed)


# --------------------------------------------------------------------------- rollout


def forecast_rollout(run, forecaster, steps: int, replicas: int, temperature_K: float, tau_fs: float,
                     min_distance_A: float, device: str) -> dict:
    """CSVR rollout from ``replicas`` evenly spaced reference frames; frames until the first guard trip."""
    starts = np.linspace(0, len(run) - 1, replicas).astype(int)
    x = torch.as_tensor(run.positions[starts].reshape(-1, 3), device=device)
    v = torch.as_tensor(run.velocities[starts].reshape(-1, 3), device=device)
    state = _state(x, v, run, replicas, device, KB_EV_PER_K * temperature_K, 1.0 / tau_fs)
    n = len(run.atomic_numbers)
    bound = default_max_temperature_K(temperature_K, n)
    positions, velocities, temperatures = [state.unwrapped_positions().cpu().numpy()], [state.velocities.cpu().numpy()], []
    for _ in range(3):  # warm-up calls (TorchScript profiling, the guard's neighbour list) outside the timing
        forecaster.call(state.positions, state.atomic_numbers, state.cell, state.pbc, state.batch, state.velocities)
        guard_problem(state.positions, state.velocities, state.cell, state.pbc, state.batch,
                      rollout.kinetic_kT(state) / KB_EV_PER_K, min_distance_A, bound)
    trip, problem = None, None
    started = time.perf_counter()
    for step in range(1, steps + 1):
        new = rollout.step(state, forecaster.call, forecaster.interval_fs)
        kelvin = rollout.kinetic_kT(new) / KB_EV_PER_K
        problem = guard_problem(new.positions, new.velocities, new.cell, new.pbc, new.batch, kelvin,
                                min_distance_A, bound)
        if problem:
            trip = step
            break
        state = new
        positions.append(state.unwrapped_positions().cpu().numpy())
        velocities.append(state.velocities.cpu().numpy())
        temperatures.append(kelvin.cpu().numpy())
    seconds = time.perf_counter() - started
    done = len(positions) - 1
    return {"positions": np.array(positions).reshape(-1, replicas, n, 3),
            "velocities": np.array(velocities).reshape(-1, replicas, n, 3),
            "temperatures_K": np.array(temperatures).reshape(-1), "intervals": done, "guard_step": trip,
            "guard_problem": problem, "ps_per_second": done * forecaster.interval_fs * FS_PS / seconds
            if seconds > 0 and done else float("nan")}


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
    """Mean-square displacement (Å²) at lags 0..max_lag; ``positions [T, R, N, 3]`` unwrapped."""
    t = positions.shape[0]
    max_lag = min(max_lag, t - 1)
    return np.array([np.mean(np.sum((positions[lag:] - positions[: t - lag]) ** 2, -1)) for lag in range(max_lag + 1)])


# --------------------------------------------------------------------------- speed of MD


def md_ps_per_second(atoms, timestep_fs: float, steps: int, device: str, model=None, calculator=None) -> float:
    """Simulated ps per wall-clock second of ``mlmd md`` (BAOAB) with a model or an ASE calculator."""
    from mlmd.md import run

    result = run(atoms, model=model, calculator=calculator, timestep_fs=timestep_fs, steps=steps, stride=steps,
                 device=device if model is not None else "cpu", plot=False)
    return result.ns_per_day / 86400.0 * 1e3


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", nargs="+", help="reference trajectory files or folders")
    parser.add_argument("--model", required=True, help="exported forecaster")
    parser.add_argument("--potential", help="an equivariant (or any mlmd) potential to time MD with")
    parser.add_argument("--calculator", help="reference calculator for MD timing (default: the reference's)")
    parser.add_argument("--time", default="10ps", help="rollout length (default 10ps)")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--temperature", type=float, help="CSVR target in K (default: the reference's)")
    parser.add_argument("--tau", default="1ps", help="CSVR relaxation time (default 1ps)")
    parser.add_argument("--min-distance", type=float, default=0.5, help="overlap guard in Å (default 0.5)")
    parser.add_argument("--pairs", type=int, default=512, help="held-out pairs for one-step errors")
    parser.add_argument("--md-steps", type=int, default=50, help="MD steps timed per engine (default 50)")
    parser.add_argument("--max-frames", type=int, default=500, help="frames used for histograms")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="forecaster_evaluation.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    runs = [read_trajectory(path) for path in trajectory_files(args.reference)]
    forecaster = load_forecaster(args.model, device=args.device)
    reference = runs[0]
    temperature_K = args.temperature or float(reference.settings.get("temperature_K", 300.0))
    tau_fs, total_fs = parse_time_fs(args.tau), parse_time_fs(args.time)
    steps = max(1, int(round(total_fs / forecaster.interval_fs)))
    k = int(round(forecaster.interval_fs / reference.frame_interval_fs))
    n = len(reference.atomic_numbers)
    report = {"model": str(args.model), "reference": [run.source for run in runs], "interval_fs": forecaster.interval_fs,
              "reference_frame_interval_fs": reference.frame_interval_fs, "atoms": n,
              "temperature_K": temperature_K, "tau_fs": tau_fs}

    report["one_step"] = one_step_errors(runs, forecaster, args.pairs, args.device)
    roll = forecast_rollout(reference, forecaster, steps, args.replicas, temperature_K, tau_fs, args.min_distance,
                            args.device)
    report["stability"] = {"intervals_requested": steps, "intervals_done": roll["intervals"],
                           "guard_step": roll["guard_step"], "guard_problem": roll["guard_problem"],
                           "stable_ps": roll["intervals"] * forecaster.interval_fs * FS_PS}

    # Reference frames at the forecaster's interval, as [T, runs, N, 3] (runs cut to the shortest).
    shortest = min(len(run) for run in runs)
    ref_x = np.stack([run.positions[:shortest:k] for run in runs], axis=1)
    ref_v = np.stack([run.velocities[:shortest:k] for run in runs], axis=1)
    frames_f = roll["positions"][1:].reshape(-1, n, 3)
    frames_r = np.concatenate([run.positions for run in runs])
    pick = lambda frames: frames[np.linspace(0, len(frames) - 1, min(args.max_frames, len(frames))).astype(int)] \
        if len(frames) else frames
    frames_f, frames_r = pick(frames_f), pick(frames_r)
    structure = {}
    r_max = 6.0 if not reference.pbc.any() else min(6.0, 0.5 * float(np.min(np.linalg.norm(reference.cell, axis=1))))
    bins = np.linspace(0.5, r_max, 111)
    structure["pair_distance_l1"] = histogram_l1(pair_distances(frames_f, reference.cell, reference.pbc),
                                                 pair_distances(frames_r, reference.cell, reference.pbc), bins)
    if not reference.pbc.any():
        pairs, triplets = bonds_and_angles(reference.atomic_numbers, reference.positions[0])
        lengths_f, angles_f = bond_samples(frames_f, pairs, triplets)
        lengths_r, angles_r = bond_samples(frames_r, pairs, triplets)
        structure.update({
            "bonds": len(pairs), "angles": len(triplets),
            "bond_length_l1": histogram_l1(lengths_f, lengths_r, np.linspace(0.7, 2.0, 131)),
            "bond_angle_l1": histogram_l1(angles_f, angles_r, np.linspace(60, 180, 121)),
            "bond_length_mean_A": [float(np.mean(lengths_f)) if len(lengths_f) else math.nan, float(np.mean(lengths_r))],
            "bond_length_std_A": [float(np.std(lengths_f)) if len(lengths_f) else math.nan, float(np.std(lengths_r))]})
    report["structure"] = structure

    lags = max(2, min(200, roll["positions"].shape[0] // 2, ref_v.shape[0] // 2))
    c_f, c_r = vacf(roll["velocities"], lags), vacf(ref_v, lags)
    freq_f, power_f = spectrum(c_f, forecaster.interval_fs)
    freq_r, power_r = spectrum(c_r, forecaster.interval_fs)
    m = min(len(power_f), len(power_r))
    msd_f, msd_r = msd(roll["positions"], lags), msd(ref_x, lags)
    m_msd = min(len(msd_f), len(msd_r))
    report["dynamics"] = {
        "vacf_lags": int(min(len(c_f), len(c_r))),
        "vacf_rmse": float(np.sqrt(np.mean((c_f[: len(c_r)] - c_r[: len(c_f)]) ** 2))),
        "spectrum_peak_cm1": [float(freq_f[np.argmax(power_f[1:]) + 1]), float(freq_r[np.argmax(power_r[1:]) + 1])],
        "spectrum_l1": float(np.sum(np.abs(power_f[:m] / power_f[:m].sum() - power_r[:m] / power_r[:m].sum()))),
        "nyquist_cm1": float(freq_f[-1]),
        "msd_at_max_lag_A2": [float(msd_f[m_msd - 1]), float(msd_r[m_msd - 1])],
        "msd_lag_fs": float((m_msd - 1) * forecaster.interval_fs),
        "vacf": {"forecaster": c_f.tolist(), "reference": c_r.tolist()},
        "msd_A2": {"forecaster": msd_f.tolist(), "reference": msd_r.tolist()}}

    temperatures = roll["temperatures_K"][len(roll["temperatures_K"]) // 5:]  # drop the first 20 %
    dof = 3 * n
    if len(temperatures) > 1:
        from scipy import stats

        canonical = stats.gamma(dof / 2, scale=2 * temperature_K / dof)
        report["temperature"] = {"mean_K": float(np.mean(temperatures)), "canonical_mean_K": temperature_K,
                                 "variance_K2": float(np.var(temperatures)),
                                 "canonical_variance_K2": 2 * temperature_K**2 / dof,
                                 "ks_distance": float(stats.kstest(temperatures, canonical.cdf).statistic),
                                 "samples": int(len(temperatures))}

    from ase import Atoms

    atoms = Atoms(numbers=reference.atomic_numbers, positions=reference.positions[0], cell=reference.cell,
                  pbc=reference.pbc, masses=reference.masses)
    speed = {"forecaster_ps_per_s": roll["ps_per_second"]}
    calculator = args.calculator or reference.settings.get("calculator")
    if calculator and args.md_steps > 0:
        speed["reference_md_ps_per_s"] = md_ps_per_second(atoms, reference.timestep_fs, args.md_steps, args.device,
                                                          calculator=calculator)
        speed["reference_calculator"] = calculator
    if args.potential and args.md_steps > 0:
        speed["potential_md_ps_per_s"] = md_ps_per_second(atoms, reference.timestep_fs, args.md_steps, args.device,
                                                          model=args.potential)
    speed["md_timestep_fs"] = reference.timestep_fs
    report["speed"] = speed

    _print_table(report)
    with atomic_write(args.json) as stream:
        json.dump(report, stream, indent=1, default=float)
    print(f"wrote {args.json}")
    return 0


def _print_table(report: dict) -> None:
    rows = []
    one = report["one_step"]
    rows += [("one-step displacement RMSE (Å)", f"{one['displacement_rmse_A']:.4g}"),
             ("one-step displacement relative RMSE", f"{one['displacement_relative_rmse']:.3g}"),
             ("one-step velocity RMSE (Å/fs)", f"{one['velocity_rmse_A_per_fs']:.4g}"),
             ("one-step velocity relative RMSE", f"{one['velocity_relative_rmse']:.3g}"),
             ("held-out pairs", str(one["pairs"]))]
    stability = report["stability"]
    rows.append(("stable rollout (ps)", f"{stability['stable_ps']:.4g}" + (
        f" (guard at interval {stability['guard_step']}: {stability['guard_problem']})"
        if stability["guard_step"] else " (no guard tripped)")))
    for key, value in report["structure"].items():
        rows.append((f"structure: {key}", json.dumps(value, default=float) if isinstance(value, list) else
                     f"{value:.4g}" if isinstance(value, float) else str(value)))
    dynamics = report["dynamics"]
    rows += [("VACF RMSE (forecaster vs reference)", f"{dynamics['vacf_rmse']:.3g}"),
             ("spectrum peak cm⁻¹ (forecaster, reference)",
              ", ".join(f"{v:.0f}" for v in dynamics["spectrum_peak_cm1"]) + f" (Nyquist {dynamics['nyquist_cm1']:.0f})"),
             ("spectrum L1", f"{dynamics['spectrum_l1']:.3g}"),
             (f"MSD at {dynamics['msd_lag_fs']:.0f} fs (Å², forecaster, reference)",
              ", ".join(f"{v:.4g}" for v in dynamics["msd_at_max_lag_A2"]))]
    if "temperature" in report:
        t = report["temperature"]
        rows += [("temperature mean K (rollout, canonical)", f"{t['mean_K']:.1f}, {t['canonical_mean_K']:.1f}"),
                 ("temperature variance K² (rollout, canonical)",
                  f"{t['variance_K2']:.4g}, {t['canonical_variance_K2']:.4g}"),
                 ("temperature KS distance", f"{t['ks_distance']:.3g} ({t['samples']} samples)")]
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
