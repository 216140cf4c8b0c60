"""Reference datasets from ASE calculators (``mlmd generate``).

A *system* is a named recipe: a set of starting configurations (a molecule;
bulk, surfaces, an adatom and a vacancy for a metal; a liquid box for
Lennard-Jones), a default reference calculator and an MD time step. Frames are
sampled from Langevin MD at each requested temperature, and a fraction are
random Gaussian displacements of sampled frames, which reach higher-energy
regions than MD does. Everything is seeded: the same command gives the same
file. The output is extended XYZ with energy, forces, stress (periodic frames
only) and, in every frame's info, where it came from and the generation
settings.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import MLMDError

Config = Tuple[str, object]  # (label, ase.Atoms)


@dataclass
class SystemRecipe:
    """How to make reference data for one named system."""

    build: Callable[[], List[Config]]
    calculator: str
    timestep_fs: float
    temperatures_K: Tuple[float, ...]
    stride: int
    relax: bool = False
    displacement_A: float = 0.05
    description: str = ""


SYSTEMS: Dict[str, SystemRecipe] = {}


def register_system(name: str, recipe: SystemRecipe) -> None:
    SYSTEMS[name.lower()] = recipe


# --- molecules ---------------------------------------------------------------

# Names users type for molecules in ASE's g2 collection.
MOLECULE_ALIASES = {
    "ethanol": "CH3CH2OH",
    "methanol": "CH3OH",
    "water": "H2O",
    "acetic-acid": "CH3COOH",
    "benzene": "C6H6",
    "acetone": "CH3COCH3",
    "formamide": "HCONH2",
    "glycine": None,
    "malonaldehyde": None,
}


def _malonaldehyde():
    """Enol malonaldehyde (C3H4O2) with its intramolecular hydrogen bond; a rough
    planar geometry that the recipe relaxes with the reference calculator."""
    from ase import Atoms

    symbols = "CCCOOHHHH"
    positions = [
        (-1.25, 0.65, 0.0),  # carbonyl C
        (0.00, 0.00, 0.0),  # central C
        (1.25, 0.65, 0.0),  # enol C
        (-1.25, 1.90, 0.0),  # carbonyl O
        (1.25, 1.90, 0.0),  # hydroxyl O
        (0.30, 2.15, 0.0),  # hydroxyl H, bridging to the carbonyl O
        (0.00, -1.08, 0.0),
        (-2.20, 0.10, 0.0),
        (2.20, 0.10, 0.0),
    ]
    return Atoms(symbols, positions=positions)


def _glycine():
    """Neutral glycine, NH2-CH2-COOH; rough geometry, relaxed by the recipe."""
    from ase import Atoms

    symbols = "NCCOOHHHHH"
    positions = [
        (-1.90, 0.40, 0.0),
        (-0.55, -0.15, 0.0),
        (0.50, 0.90, 0.0),
        (0.30, 2.10, 0.0),
        (1.75, 0.40, 0.0),
        (2.35, 1.15, 0.0),
        (-0.42, -0.78, 0.88),
        (-0.42, -0.78, -0.88),
        (-2.55, -0.35, 0.0),
        (-2.05, 0.98, 0.82),
    ]
    return Atoms(symbols, positions=positions)


def molecule_configs(name: str) -> List[Config]:
    from ase.build import molecule

    if name == "malonaldehyde":
        atoms = _malonaldehyde()
    elif name == "glycine":
        atoms = _glycine()
    else:
        atoms = molecule(MOLECULE_ALIASES.get(name) or name)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return [(name, atoms)]


def _register_molecules() -> None:
    from ase.collections import g2

    for alias in MOLECULE_ALIASES:
        register_system(
            alias,
            SystemRecipe(
                build=lambda alias=alias: molecule_configs(alias),
                calculator="gfn2",
                timestep_fs=0.5,
                temperatures_K=(300.0, 600.0),
                stride=20,
                relax=True,
                displacement_A=0.04,
                description=f"{alias} in vacuum (GFN2-xTB)",
            ),
        )
    for formula in g2.names:
        if formula.lower() not in SYSTEMS:
            register_system(
                formula.lower(),
                SystemRecipe(
                    build=lambda formula=formula: molecule_configs(formula),
                    calculator="gfn2",
                    timestep_fs=0.5,
                    temperatures_K=(300.0, 600.0),
                    stride=20,
                    relax=True,
                    displacement_A=0.04,
                    description=f"{formula} from ASE's g2 collection (GFN2-xTB)",
                ),
            )


# --- metals (EMT) ------------------------------------------------------------

EMT_METALS = ("Cu", "Al", "Ni", "Pd", "Ag", "Pt", "Au")


def metal_configs(symbol: str) -> List[Config]:
    """Bulk (two sizes), a vacancy, fcc(100) and fcc(111) slabs, and an adatom on (100)."""
    from ase.build import add_adsorbate, bulk, fcc100, fcc111

    configs: List[Config] = []
    unit = bulk(symbol, "fcc", cubic=True)
    configs.append(("bulk", unit.repeat((2, 2, 2))))
    configs.append(("bulk-large", unit.repeat((3, 3, 3))))
    vacancy = unit.repeat((2, 2, 2))
    del vacancy[0]
    configs.append(("vacancy", vacancy))
    configs.append(("surface-100", fcc100(symbol, size=(3, 3, 4), vacuum=6.0, periodic=True)))
    configs.append(("surface-111", fcc111(symbol, size=(3, 3, 4), vacuum=6.0, periodic=True)))
    adatom = fcc100(symbol, size=(3, 3, 4), vacuum=6.0, periodic=True)
    add_adsorbate(adatom, symbol, height=1.8, position="hollow")
    configs.append(("adatom-100", adatom))
    for _, atoms in configs:
        atoms.info.pop("adsorbate_info", None)  # ASE's slab bookkeeping; extended XYZ cannot hold it
    return configs


def _register_metals() -> None:
    for symbol in EMT_METALS:
        register_system(
            symbol.lower(),
            SystemRecipe(
                build=lambda symbol=symbol: metal_configs(symbol),
                calculator="emt",
                timestep_fs=2.0,
                temperatures_K=(300.0, 900.0),
                stride=10,
                displacement_A=0.08,
                description=f"{symbol}: bulk, vacancy, (100) and (111) surfaces, adatom (EMT)",
            ),
        )


# --- Lennard-Jones -----------------------------------------------------------


def argon_configs() -> List[Config]:
    """108 argon atoms in a periodic box at the liquid density near the triple point
    (1.374 g/cm^3, 0.0207 atoms/Å^3), started from fcc."""
    from ase.build import bulk

    lattice = (4.0 / 0.0207) ** (1.0 / 3.0)
    atoms = bulk("Ar", "fcc", a=lattice, cubic=True).repeat((3, 3, 3))
    return [("liquid", atoms)]


def _register_lj() -> None:
    recipe = SystemRecipe(
        build=argon_configs,
        calculator="lj",
        timestep_fs=5.0,
        temperatures_K=(90.0, 120.0),
        stride=20,
        displacement_A=0.05,
        description="liquid argon, 108 atoms (Lennard-Jones)",
    )
    register_system("argon", recipe)
    register_system("lj", recipe)


_register_molecules()
_register_metals()
_register_lj()


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

    from . import __version__
    from .calculators import get_calculator

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


# --- command line ------------------------------------------------------------


def _add_arguments(parser) -> None:
    parser.add_argument("system", nargs="?", help="system to generate (see --list), e.g. ethanol, cu, argon")
    parser.add_argument("-o", "--output", help="output extended XYZ file (default: SYSTEM.xyz)")
    parser.add_argument("--frames", type=int, default=1000, help="number of labelled frames (default 1000)")
    parser.add_argument("--calculator", help="reference calculator: emt, lj, morse, gfn2 or an ASE calculator name "
                        "(default: the system's own)")
    parser.add_argument("--temperatures", help="comma-separated MD temperatures in K (default: the system's own)")
    parser.add_argument("--timestep", type=float, help="MD time step in fs")
    parser.add_argument("--stride", type=int, help="MD steps between sampled frames")
    parser.add_argument("--equilibration", type=int,
                        help="MD steps before sampling (default 200; 1000 with --trajectory)")
    parser.add_argument("--displaced-fraction", type=float, default=0.1,
                        help="fraction of frames that are random displacements (default 0.1)")
    parser.add_argument("--displacement", type=float, help="standard deviation of the displacements in Å")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--list", action="store_true", help="list the systems and exit")
    group = parser.add_argument_group(
        "reference trajectories (--trajectory)",
        "write RUNS independent CSVR runs with positions and velocities every --stride steps (default 1) into the "
        "folder -o (default SYSTEM-trajectories/), one file per run; see mlmd.trajectories")
    group.add_argument("--trajectory", action="store_true", help="write reference trajectories instead of frames")
    group.add_argument("--runs", type=int, default=4, help="independent runs (default 4)")
    group.add_argument("--steps", type=int, default=20000, help="recorded MD steps per run (default 20000)")
    group.add_argument("--temperature", type=float, default=300.0, help="temperature in K (default 300)")
    group.add_argument("--friction", type=float, default=1.0,
                       help="CSVR rate 1/tau in 1/ps (default 1; 0 runs NVE velocity Verlet)")
    group.add_argument("--config", help="starting configuration of the system (default its first, e.g. bulk)")
    group.add_argument("--format", default="h5", choices=("h5", "xyz"), help="file format per run (default h5)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _parse_temperatures(text: Optional[str]) -> Optional[List[float]]:
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise MLMDError(f"--temperatures must be comma-separated numbers in K, got {text!r}") from None


def _run(args) -> int:
    from .io import write_frames

    if args.list:
        named = [n for n in SYSTEMS if n in MOLECULE_ALIASES or n in ("argon", "lj") or n.capitalize() in EMT_METALS]
        for name in named:
            print(f"{name:15s} {SYSTEMS[name].description}")
        print(f"... and the {len(SYSTEMS) - len(named)} molecules of ASE's g2 collection by formula (e.g. ch3cooh)")
        return 0
    if not args.system:
        raise MLMDError("name a system to generate, e.g. `mlmd generate ethanol`; `mlmd generate --list` lists them")
    start = time.perf_counter()
    if args.trajectory:
        from .trajectories import generate_trajectories

        output = args.output or f"{args.system.lower()}-trajectories"
        paths = generate_trajectories(
            args.system, output, runs=args.runs, steps=args.steps, timestep_fs=args.timestep,
            temperature_K=args.temperature, stride=args.stride or 1,
            equilibration_steps=1000 if args.equilibration is None else args.equilibration,
            friction_per_ps=args.friction, calculator=args.calculator, config=args.config, seed=args.seed,
            fmt=args.format, progress=not args.quiet)
        elapsed = time.perf_counter() - start
        print(f"wrote {len(paths)} trajectories of {args.system} ({args.steps // (args.stride or 1) + 1} frames each) "
              f"to {output}/ in {elapsed:.1f} s")
        return 0
    output = args.output or f"{args.system.lower()}.xyz"
    frames = generate(
        args.system,
        frames=args.frames,
        calculator=args.calculator,
        temperatures_K=_parse_temperatures(args.temperatures),
        timestep_fs=args.timestep,
        stride=args.stride,
        equilibration_steps=200 if args.equilibration is None else args.equilibration,
        displaced_fraction=args.displaced_fraction,
        displacement_A=args.displacement,
        seed=args.seed,
        progress=not args.quiet,
    )
    write_frames(output, frames)
    elapsed = time.perf_counter() - start
    print(f"wrote {len(frames)} frames of {args.system} to {output} in {elapsed:.1f} s")
    return 0


from .cli import Command  # noqa: E402  (the CLI module only defines the Command type)

COMMAND = Command(
    name="generate",
    help="make a labelled reference dataset with an ASE calculator",
    add_arguments=_add_arguments,
    run=_run,
)
