"""The issue-14 table from the JSON files of ``scripts/run_forecaster_evaluation.sh``.

In brackets after a difference: the same difference between one reference run and the others pooled
(``reference_noise`` of ``scripts/evaluate_forecaster.py``; mean over the runs, for D the range), the
sampling noise the forecaster's value is read against.

One row per system and mode (``OUT/SYSTEM/evaluation-MODE.json``), with the issue's targets in the
header: mean temperature within 2 % of the target, Var T within 15 % of the canonical value, RDF max
|dg| (periodic) or bond-length/angle L1 (molecules), diffusion ratio 0.8-1.25 (liquids), VACF RMS
difference <= 0.05, guard-free intervals, and the speed-up over MD with an equivariant potential of the
same width (measured in the deterministic mode only).

    python scripts/summarize_forecaster_evaluation.py out/forecaster            # markdown on stdout
"""

import argparse
import json
import math
from pathlib import Path

MODES = ("deterministic", "deterministic-energy", "stochastic", "stochastic-joint", "stochastic-mean",
         "stochastic-energy")


def number(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def row(system: str, mode: str, report: dict) -> str:
    temperature = report.get("temperature", {})
    structure = report.get("structure", {})
    dynamics = report.get("dynamics", {})
    stability = report.get("stability", {})
    speed = report.get("speed", {})
    noise = report.get("reference_noise", {})

    def with_noise(key: str) -> str:
        """The forecaster's difference, and the reference runs' own (mean over leave-one-out) in brackets."""
        spread = noise.get(key, {}).get("mean")
        return number(structure.get(key, dynamics.get(key))) + (f" [ref {number(spread)}]" if spread is not None else "")

    if "rdf_max_abs_difference" in structure:
        shape = f"RDF max dg {with_noise('rdf_max_abs_difference')}"
    elif "bond_length_l1" in structure:
        shape = f"bond L1 {with_noise('bond_length_l1')}, angle L1 {with_noise('bond_angle_l1')}"
    else:
        shape = "-"
    diffusion = number(dynamics.get("diffusion_ratio"))
    if "diffusion_ratio" in noise:  # one reference run's D over the others': the range over the runs
        diffusion += f" [ref {number(noise['diffusion_ratio']['min'])}-{number(noise['diffusion_ratio']['max'])}]"
    guard = report.get("rollout_guard", {})
    if stability.get("guard_step") is not None:
        stable = f"guard at {stability['guard_step']} ({stability.get('guard_problem', '').split(',')[0]})"
    else:
        stable = f"{stability.get('replicas', 0)} x {stability.get('intervals_done', 0)} clean"
    if stability.get("rejected_fraction") is not None:
        stable += f"; {number(stability['rejected_fraction'], 2)} rejected"
    checks = stability.get("temperature_checks", {})
    if checks.get("first_trip_interval") is not None:
        stable += f"; T check trips at {checks['first_trip_interval']}"
    if guard.get("guard_step") is not None:
        stable += f"; observables rollout stopped at {guard['guard_step']}"
    mean = temperature.get("mean_K")
    target = report.get("temperature_K")
    return (f"| {system} | {mode} | {number(mean, 4)} / {number(target, 4)} | {number(temperature.get('variance_ratio'))} | "
            f"{shape} | {diffusion} | {with_noise('vacf_rms_difference')} | "
            f"{stable} | {number(speed.get('speedup_vs_potential_md'))} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the OUT folder of run_forecaster_evaluation.sh")
    args = parser.parse_args()
    print("| system | mode | T mean / target (K) | Var T / canonical | structure | D / D_ref | VACF RMS | "
          "stability | speed-up vs MD |")
    print("|---|---|---|---|---|---|---|---|---|")
    for system_dir in sorted(path for path in args.out.iterdir() if path.is_dir()):
        for mode in MODES:
            path = system_dir / f"evaluation-{mode}.json"
            if path.is_file():
                print(row(system_dir.name, mode, json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
