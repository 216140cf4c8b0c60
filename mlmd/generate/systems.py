"""Named systems ``mlmd generate`` can make data for: a registry of recipes.

A recipe gives a set of starting configurations (a molecule; bulk, surfaces, an
adatom and a vacancy for a metal; a liquid box for Lennard-Jones), a default
reference calculator and an MD time step. :func:`register_system` adds one.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np


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


def _molecule_recipe(name: str, description: str) -> SystemRecipe:
    """A molecule in vacuum with GFN2-xTB: relaxed, MD at 300 and 600 K every 20 steps of 0.5 fs."""
    return SystemRecipe(build=lambda: molecule_configs(name), calculator="gfn2", timestep_fs=0.5,
                        temperatures_K=(300.0, 600.0), stride=20, relax=True, displacement_A=0.04,
                        description=description)


def _register_molecules() -> None:
    from ase.collections import g2

    for alias in MOLECULE_ALIASES:
        register_system(alias, _molecule_recipe(alias, f"{alias} in vacuum (GFN2-xTB)"))
    for formula in g2.names:
        if formula.lower() not in SYSTEMS:
            description = f"{formula} from ASE's g2 collection (GFN2-xTB)"
            register_system(formula.lower(), _molecule_recipe(formula, description))


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


def alloy_configs(first: str = "Cu", second: str = "Au", seed: int = 7) -> List[Config]:
    """A binary fcc alloy of two EMT metals (the first the majority): the ordered L1_2 ``A3B`` crystal
    (32 atoms), disordered fcc solid solutions ``A3B`` (108 atoms) and ``AB`` (32 atoms), an ``A`` vacancy in the
    ordered crystal, and a (111) slab of the ``AB`` solution. Lattice constants follow Vegard's law from the
    elements' reference fcc ones; the disordered occupations are drawn with ``seed``, so the recipe is fixed."""
    from ase.build import bulk, fcc111
    from ase.data import atomic_numbers, reference_states

    rng = np.random.default_rng(seed)
    a_first, a_second = (reference_states[atomic_numbers[s]]["a"] for s in (first, second))

    def lattice(fraction_second: float) -> float:
        return (1.0 - fraction_second) * a_first + fraction_second * a_second

    def disordered(atoms, fraction_second: float):
        symbols = np.array([first] * len(atoms))
        symbols[rng.permutation(len(atoms))[: int(round(fraction_second * len(atoms)))]] = second
        atoms.set_chemical_symbols(symbols.tolist())
        return atoms

    ordered = bulk(first, "fcc", a=lattice(0.25), cubic=True)
    ordered[0].symbol = second  # the cube corner: L1_2 A3B with B on the corners, A on the face centres
    configs: List[Config] = [("ordered-a3b", ordered.repeat((2, 2, 2)))]
    configs.append(("disordered-a3b", disordered(bulk(first, "fcc", a=lattice(0.25), cubic=True).repeat((3, 3, 3)),
                                                 0.25)))
    configs.append(("disordered-ab", disordered(bulk(first, "fcc", a=lattice(0.5), cubic=True).repeat((2, 2, 2)),
                                                0.5)))
    vacancy = ordered.repeat((2, 2, 2))
    del vacancy[1]
    configs.append(("vacancy", vacancy))
    slab = disordered(fcc111(first, size=(3, 3, 4), a=lattice(0.5), vacuum=6.0, periodic=True), 0.5)
    slab.info.pop("adsorbate_info", None)  # ASE's slab bookkeeping; extended XYZ cannot hold it
    configs.append(("surface-111", slab))
    return configs


def _register_alloys() -> None:
    register_system("cuau", SystemRecipe(
        build=lambda: alloy_configs("Cu", "Au"), calculator="emt", timestep_fs=2.0, temperatures_K=(300.0, 900.0),
        stride=10, displacement_A=0.08,
        description="Cu-Au alloy: ordered Cu3Au, disordered Cu3Au and CuAu, a vacancy, a (111) surface (EMT)"))


def liquid_metal_configs(symbol: str, rattle_A: float = 0.6) -> List[Config]:
    """108 atoms (3x3x3 cubic fcc cells at the EMT lattice constant, periodic) with every atom displaced
    by a seeded Gaussian of ``rattle_A`` Å per component: a disordered start that melts within the first
    picosecond of equilibration above the EMT melting point (Al at 1000 K: D ≈ 7e-5 cm²/s)."""
    from ase.build import bulk

    atoms = bulk(symbol, "fcc", cubic=True).repeat((3, 3, 3))
    atoms.rattle(rattle_A, seed=1)
    return [("liquid", atoms)]


def _register_liquid_metals() -> None:
    register_system("al-liquid", SystemRecipe(
        build=lambda: liquid_metal_configs("Al"), calculator="emt", timestep_fs=2.0, temperatures_K=(1000.0,),
        stride=10, displacement_A=0.08, description="liquid Al, 108 atoms at the fcc density, 1000 K (EMT)"))


def parse_miller(text: str) -> Tuple[int, int, int]:
    """Miller indices from ``"111"`` or ``"1,1,0"`` (``"-1,1,0"`` for negative ones)."""
    parts = text.split(",") if "," in text else list(text)
    try:
        indices = tuple(int(p) for p in parts)
    except ValueError:
        indices = ()
    if len(indices) != 3 or not any(indices):
        raise ValueError(f"surface {text!r} is not three Miller indices; write e.g. 111, 100 or -1,1,0")
    return indices  # type: ignore[return-value]


def slab_from_bulk(atoms, miller: Tuple[int, int, int], vacuum_A: float = 6.0, thickness_A: float = 7.0):
    """A slab of ``atoms`` (a periodic bulk cell) cut along the plane ``miller`` of its cell vectors,
    with ``vacuum_A`` Å of vacuum on each side and periodic in all three directions (the vacuum
    separates the images). The smallest number of repeats of the cell along the normal that makes
    the slab at least ``thickness_A`` Å thick (atom centres) is used."""
    from ase.build import surface

    if not atoms.pbc.all():
        raise ValueError("a slab can only be cut from a bulk cell periodic in all three directions")
    for layers in range(1, 40):
        slab = surface(atoms, miller, layers, vacuum=vacuum_A, periodic=True)
        heights = slab.positions @ np.cross(slab.cell[0], slab.cell[1]) / np.linalg.norm(
            np.cross(slab.cell[0], slab.cell[1]))
        if heights.max() - heights.min() >= thickness_A:
            break
    slab.info.clear()
    return slab


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
_register_liquid_metals()
_register_alloys()
_register_lj()


