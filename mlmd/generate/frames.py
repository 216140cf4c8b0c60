"""Labelled frames from an ASE calculator (``mlmd generate SYSTEM``).

Frames are sampled from Langevin MD at each requested temperature, and a fraction
are random Gaussian displacements of sampled frames, which reach higher-energy
regions than MD does. Everything is seeded: the same command gives the same file.
Periodic frames carry the stress.
"""

import json
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from ..errors import MLMDError
from .systems import SYSTEMS

# --- generation --------------------------------------------------------------


@dataclass
class GenerateSettings:
    """Everything that determines a generated dataset; stored in every frame."""

    system: str
    calculator: str
    frames: int
    temperatures_K: List[float]
    timestep_fs: float
    stride: int
    equilibration_steps: int
    displaced_fraction: float
    displacement_A: float
    friction_per_fs: float
    seed: int
    mlmd_version: str = field(default="")


def _labelled_copy(atoms, calculator, info: dict):
    """A copy of ``atoms`` carrying the reference energy, forces and (if periodic) stress."""
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms.calc = calculator
    results = {
        "energy": float(atoms.get_potential_energy()),
        "forces": np.array(atoms.get_forces()),
    }
    if atoms.pbc.all():
        results["stress"] = np.array(atoms.get_stress(voigt=True))
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, **results)
    frame.info.update(info)
    values = [results["energy"], *results["forces"].ravel()]
    if not np.all(np.isfinite(values)):
        raise MLMDError(
            f"the reference calculator returned NaN or infinite values at {info}; "
            "lower the temperature or the displacement"
        )
    return frame


def _split_evenly(total: int, parts: int) -> List[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def generate(
    system: str,
    frames: int = 1000,
    calculator: Optional[str] = None,
    temperatures_K: Optional[Sequence[float]] = None,
    timestep_fs: Optional[float] = None,
    stride: Optional[int] = None,
    equilibration_steps: int = 200,
    displaced_fraction: float = 0.1,
    displacement_A: Optional[float] = None,
    friction_per_fs: float = 0.02,
    seed: int = 0,
    progress: bool = True,
) -> list:
    """Generate ``frames`` labelled configurations of ``system``; returns ASE Atoms.

    Frames are shared evenly over (configuration, temperature) pairs. Within
    each pair, ``1 - displaced_fraction`` of the frames are Langevin MD
    snapshots every ``stride`` steps after ``equilibration_steps``; the rest
    are those snapshots displaced by Gaussian noise of ``displacement_A`` Å.
    """
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md import velocitydistribution
    from tqdm import tqdm

    from .. import __version__
    from ..calculators import get_calculator

    key = system.lower()
    if key not in SYSTEMS:
        raise MLMDError(
            f"unknown system {system!r}; run `mlmd generate --list` for the systems that can be generated"
        )
    if frames < 1:
        raise MLMDError(f"--frames must be at least 1, got {frames}")
    if not 0.0 <= displaced_fraction < 1.0:
        raise MLMDError(f"--displaced-fraction must be in [0, 1), got {displaced_fraction}")
    recipe = SYSTEMS[key]
    settings = GenerateSettings(
        system=key,
        calculator=calculator or recipe.calculator,
        frames=frames,
        temperatures_K=[float(t) for t in (temperatures_K or recipe.temperatures_K)],
        timestep_fs=float(timestep_fs or recipe.timestep_fs),
        stride=int(stride or recipe.stride),
        equilibration_steps=int(equilibration_steps),
        displaced_fraction=float(displaced_fraction),
        displacement_A=float(displacement_A if displacement_A is not None else recipe.displacement_A),
        friction_per_fs=float(friction_per_fs),
        seed=int(seed),
        mlmd_version=__version__,
    )
    if any(t <= 0 for t in settings.temperatures_K):
        raise MLMDError("temperatures must be positive (K)")
    settings_json = json.dumps(asdict(settings), sort_keys=True)
    rng = np.random.default_rng(seed)
    reference = get_calculator(settings.calculator)

    segments = [(label, atoms, t) for label, atoms in recipe.build() for t in settings.temperatures_K]
    per_segment = _split_evenly(frames, len(segments))
    dataset = []
    bar = tqdm(total=frames, desc=f"generate {key}", unit="frame", disable=not progress)
    for (label, start, temperature), n_frames in zip(segments, per_segment):
        if n_frames == 0:
            continue
        atoms = start.copy()
        atoms.calc = reference
        if recipe.relax:
            from ase.optimize import BFGS

            BFGS(atoms, logfile=None).run(fmax=0.05, steps=300)
        n_displaced = int(round(n_frames * settings.displaced_fraction))
        n_md = n_frames - n_displaced
        # ASE 3.29 renamed MaxwellBoltzmannDistribution; accept both.
        thermalize = getattr(velocitydistribution, "thermalize_momenta", None)
        thermalize = thermalize or velocitydistribution.MaxwellBoltzmannDistribution
        thermalize(atoms, temperature_K=temperature, rng=rng)
        velocitydistribution.Stationary(atoms)
        dynamics = Langevin(
            atoms,
            timestep=settings.timestep_fs * units.fs,
            temperature_K=temperature,
            friction=settings.friction_per_fs / units.fs,
            fixcm=False,  # ASE's fixcm=True biases the NVT distribution of small systems
            rng=rng,
        )
        dynamics.run(settings.equilibration_steps)
        snapshots = []
        for k in range(n_md):
            dynamics.run(settings.stride)
            info = {
                "config": label,
                "source": "md",
                "temperature_K": temperature,
                "md_step": settings.equilibration_steps + (k + 1) * settings.stride,
                "mlmd_generate": settings_json,
            }
            snapshots.append(_labelled_copy(atoms.copy(), reference, info))
            bar.update(1)
        for k in range(n_displaced):
            base = snapshots[int(rng.integers(len(snapshots)))] if snapshots else start
            displaced = base.copy()
            displaced.positions += rng.normal(scale=settings.displacement_A, size=displaced.positions.shape)
            info = {
                "config": label,
                "source": "displacement",
                "temperature_K": temperature,
                "displacement_A": settings.displacement_A,
                "mlmd_generate": settings_json,
            }
            snapshots.append(_labelled_copy(displaced, reference, info))
            bar.update(1)
        dataset.extend(snapshots)
    bar.close()
    return dataset


