"""The layout rules of DESIGN.md, checked on the source tree: file sizes, the direction of imports,
no private names across modules, and one obvious home for each concept."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("potentials", "integrators", "mlmd")
FAMILIES = ("equivariant", "facet", "spline", "forecaster", "transformer")
MAX_LINES = 500

# Where a newcomer finds each concept (issue 12); a test fails when one moves without this table.
HOMES = {
    "neighbour list": "potentials/neighbors.py",
    "Langevin integrators": "integrators/langevin.py",
    "velocity Verlet": "integrators/verlet.py",
    "CSVR thermostat": "integrators/csvr.py",
    "MD trajectory writing": "mlmd/dynamics/trajectory.py",
    "run loop": "mlmd/dynamics/driver.py",
    "ASE calculator": "mlmd/ase/calculator.py",
    "OpenMM force": "mlmd/openmm/force.py",
    "training loop": "mlmd/training/trainer.py",
    "GP kernel": "mlmd/saddle/kernel.py",
    "trust region": "mlmd/saddle/trust_region.py",
    "conformance suite": "potentials/testing.py",
}


def sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(imported module, names) for every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield base, [alias.name for alias in node.names]


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_names_across_modules_and_imports_point_one_way(path):
    here = module_name(path)
    top = here.split(".")[0]
    for module, names in imports(path):
        if module.split(".")[0] in PACKAGES and module != here:
            private = [name for name in names if name.startswith("_") and not name.startswith("__")]
            assert not private, f"{here} imports private {private} from {module}"
        if top in ("potentials", "integrators"):
            assert module.split(".")[0] != "mlmd", f"{here} imports {module}: dependencies point into mlmd only"
        if top == "integrators":
            assert module.split(".")[0] != "potentials", f"{here} imports {module}"
        if top == "potentials" and here.split(".")[-1] in FAMILIES:
            others = [f"potentials.{family}" for family in FAMILIES if f"potentials.{family}" != here]
            assert module not in others, f"family {here} imports family {module}; share it through potentials.blocks"


def test_no_file_in_mlmd_is_over_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "mlmd").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("concept", sorted(HOMES))
def test_each_concept_has_its_home(concept):
    assert (ROOT / HOMES[concept]).is_file(), f"the {concept} should live in {HOMES[concept]}"
