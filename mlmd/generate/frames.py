"""Labelled frames from an ASE calculator (``mlmd generate SYSTEM``).

Frames are sampled from Langevin MD at each requested temperature, and a fraction
are random Gaussian displacements of sampled frames, which reach higher-energy
regions than MD does. Everything is seeded: the same command gives the same file.
Periodic frames carry the stress.

Frames that make a model robust, or test it off its training distribution, are
further kinds that share the frames of each (configuration, temperature) with the
MD frames (registry :data:`FRAME_KINDS`):

- ``displaced-A``: every coordinate of the relaxed minimum displaced by a Gaussian of
  standard deviation ``A`` Å (``displaced-md-A``: of a sampled MD frame);
- ``strained-S``: a sampled MD frame in a cell deformed by ``(I + eps)``, ``eps``
  symmetric with entries uniform in ``[-S, S]`` (atoms move with the cell);
- ``surface-HKL``: MD frames of a slab cut along ``(HKL)`` from the system's bulk.

Every frame's ``config_type`` info key names its kind, so errors can be reported per
kind (``md`` for plain MD frames).
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
    displacements_A: List[float] = field(default_factory=list)
    displace_from: str = "minimum"
    strain: float = 0.0
    surfaces: List[str] = field(default_factory=list)


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


def minimum_of(atoms, calculator, fmax_eV_per_A: float = 0.01):
    """A copy of ``atoms`` relaxed (positions only, BFGS) until every force is below ``fmax_eV_per_A``."""
    from ase.optimize import BFGS

    relaxed = atoms.copy()
    relaxed.calc = calculator
    BFGS(relaxed, logfile=None).run(fmax=fmax_eV_per_A, steps=500)
    relaxed.calc = None
    return relaxed


def random_strain(limit: float, rng: np.random.Generator) -> np.ndarray:
    """A symmetric ``3x3`` strain with every entry uniform in ``[-limit, limit]``."""
    upper = np.triu(rng.uniform(-limit, limit, size=(3, 3)))
    return upper + np.triu(upper, 1).T


def strained(atoms, strain: np.ndarray):
    """A copy of ``atoms`` whose cell rows ``a`` become ``a (I + strain)``; atoms keep their fractional positions."""
    copy = atoms.copy()
    copy.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return copy


@dataclass
class Segment:
    """One (configuration, temperature): its start and MD snapshots; ``minima`` caches the relaxed
    start of each configuration, shared by the segments of all temperatures."""

    label: str
    start: object
    reference: object
    rng: np.random.Generator
    minima: dict
    snapshots: list = field(default_factory=list)

    def md_frame(self):
        """A random one of the segment's MD snapshots (the start if there are none)."""
        return self.snapshots[int(self.rng.integers(len(self.snapshots)))] if self.snapshots else self.start

    def relaxed(self):
        if self.label not in self.minima:
            self.minima[self.label] = minimum_of(self.start, self.reference)
        return self.minima[self.label]


def _displaced(segment: Segment, amplitude_A: float, from_md: bool):
    base = segment.md_frame() if from_md else segment.relaxed()
    atoms = base.copy()
    atoms.positions += segment.rng.normal(scale=amplitude_A, size=atoms.positions.shape)
    return atoms, {"source": "displacement", "displacement_A": amplitude_A,
                   "displaced_from": "md" if from_md else "minimum"}


def _strained(segment: Segment, limit: float):
    strain = random_strain(limit, segment.rng)
    return strained(segment.md_frame(), strain), {"source": "strain", "strain": strain.ravel()}


# Frame kinds besides MD: config_type prefix -> maker(segment, amount, from_md) -> (unlabelled atoms, info).
FRAME_KINDS = {
    "displaced": lambda segment, amount, from_md: _displaced(segment, amount, from_md),
    "strained": lambda segment, amount, from_md: _strained(segment, amount),
}


def _check_options(key: str, settings: GenerateSettings, configs: list) -> None:
    """One clear error for each option that does not fit the system or the other options."""
    periodic = [atoms.pbc.all() for _, atoms in configs]
    if any(not 0.0 < a <= 0.5 for a in settings.displacements_A):
        raise MLMDError(f"--displacements must be amplitudes in Å in (0, 0.5], got {settings.displacements_A}")
    if settings.displace_from not in ("minimum", "md"):
        raise MLMDError(f"--displace-from must be 'minimum' or 'md', got {settings.displace_from!r}")
    if settings.strain and not 0.0 < settings.strain < 0.2:
        raise MLMDError(f"--strain must be in (0, 0.2) (a fraction: 0.03 is ±3 %), got {settings.strain}")
    if settings.strain and not all(periodic):
        raise MLMDError(f"--strain needs a periodic system, and {key} is not periodic in all three directions; "
                        "drop --strain or choose a periodic system (e.g. cu, argon)")
    if settings.surfaces and not periodic[0]:
        raise MLMDError(f"--surface cuts a slab from the bulk, and {key} has no periodic bulk configuration; "
                        "drop --surface or choose a bulk system (e.g. cu, al)")


def _kinds(settings: GenerateSettings) -> List[tuple]:
    """``(config_type, kind, amount, from_md)`` of every kind besides MD, in the order they are made."""
    from_md = settings.displace_from == "md"
    kinds = [(f"displaced-{'md-' if from_md else ''}{a:g}", "displaced", a, from_md)
             for a in settings.displacements_A]
    if settings.strain:
        kinds.append((f"strained-{settings.strain:g}", "strained", settings.strain, True))
    return kinds


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
    displacements_A: Sequence[float] = (),
    displace_from: str = "minimum",
    strain: float = 0.0,
    surfaces: Sequence[str] = (),
) -> list:
    """Generate ``frames`` labelled configurations of ``system``; returns ASE Atoms.

    Frames are shared evenly over (configuration, temperature) pairs, and within
    each pair evenly over MD and the further kinds asked for (module docstring):
    one per amplitude in ``displacements_A`` (Å, Gaussian per coordinate, from the
    relaxed minimum or, with ``displace_from="md"``, from MD frames) and one for
    ``strain`` (> 0: random symmetric strains up to ±``strain``). ``surfaces``
    (Miller indices such as ``"111"``) add slabs cut from the bulk as further
    configurations (MD frames only). Of the MD frames, ``1 - displaced_fraction``
    are Langevin MD snapshots every ``stride`` steps after ``equilibration_steps``;
    the rest are those snapshots displaced by Gaussian noise of ``displacement_A`` Å.
    """
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md import velocitydistribution
    from tqdm import tqdm

    from .. import __version__
    from ..calculators import get_calculator
    from .systems import parse_miller, slab_from_bulk

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
        displacements_A=[float(a) for a in displacements_A],
        displace_from=str(displace_from),
        strain=float(strain),
        surfaces=[str(m) for m in surfaces],
    )
    if any(t <= 0 for t in settings.temperatures_K):
        raise MLMDError("temperatures must be positive (K)")
    configs = recipe.build()
    _check_options(key, settings, configs)
    slabs = {}  # config label -> config_type of the slabs cut by --surface
    for miller in settings.surfaces:
        try:
            indices = parse_miller(miller)
        except ValueError as exc:
            raise MLMDError(f"--surface: {exc}") from None
        name = "".join(str(i) for i in indices)
        slabs[f"slab-{name}"] = f"surface-{name}"
        configs.append((f"slab-{name}", slab_from_bulk(configs[0][1], indices)))
    settings_json = json.dumps(asdict(settings), sort_keys=True)
    rng = np.random.default_rng(seed)
    reference = get_calculator(settings.calculator)

    segments = [(label, atoms, t) for label, atoms in configs for t in settings.temperatures_K]
    per_segment = _split_evenly(frames, len(segments))
    dataset = []
    minima: dict = {}
    bar = tqdm(total=frames, desc=f"generate {key}", unit="frame", disable=not progress)
    for (label, start, temperature), n_frames in zip(segments, per_segment):
        if n_frames == 0:
            continue
        kinds = [] if label in slabs else _kinds(settings)
        counts = _split_evenly(n_frames, len(kinds) + 1)
        segment = Segment(label, start, reference, rng, minima)
        atoms = start.copy()
        atoms.calc = reference
        if recipe.relax:
            from ase.optimize import BFGS

            BFGS(atoms, logfile=None).run(fmax=0.05, steps=300)
        n_displaced = int(round(counts[0] * settings.displaced_fraction))
        n_md = counts[0] - n_displaced
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
        common = {"config": label, "temperature_K": temperature, "mlmd_generate": settings_json}
        snapshots = segment.snapshots
        for k in range(n_md):
            dynamics.run(settings.stride)
            info = {"source": "md", "config_type": slabs.get(label, "md"),
                    "md_step": settings.equilibration_steps + (k + 1) * settings.stride, **common}
            snapshots.append(_labelled_copy(atoms.copy(), reference, info))
            bar.update(1)
        for k in range(n_displaced):
            base = snapshots[int(rng.integers(len(snapshots)))] if snapshots else start
            displaced = base.copy()
            displaced.positions += rng.normal(scale=settings.displacement_A, size=displaced.positions.shape)
            info = {"source": "displacement", "displacement_A": settings.displacement_A, "displaced_from": "md",
                    "config_type": slabs.get(label, f"displaced-md-{settings.displacement_A:g}"), **common}
            snapshots.append(_labelled_copy(displaced, reference, info))
            bar.update(1)
        extra = []
        for (config_type, kind, amount, from_md), count in zip(kinds, counts[1:]):
            for _ in range(count):
                made, info = FRAME_KINDS[kind](segment, amount, from_md)
                extra.append(_labelled_copy(made, reference, {**info, "config_type": config_type, **common}))
                bar.update(1)
        dataset.extend(snapshots + extra)
    bar.close()
    return dataset
