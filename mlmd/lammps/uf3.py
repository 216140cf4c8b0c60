"""``mlmd export --format uf3``: a ``spline`` model as the potential file of LAMMPS's ``pair_style uf3``.

LAMMPS's ML-UF3 package evaluates, natively and domain-decomposed::

    E_uf3 = sum_{i != j} V2(r_ij) + sum_i sum_{j<k} V3(r_ij, r_ik, r_jk)

with every term a cubic B-spline on the knots its file gives. mlmd's ``spline``
family (:mod:`potentials.spline`) has the same form but three other conventions,
each mapped exactly here:

1. Knots. mlmd's basis is ``B_p(r) = N((r - r_min)/h - p + 3)`` on uniform knots that
   run past both ends, continued linearly below ``r_min``. The file gets the knot
   vector (type ``nk``, any knots) ``[r0]*4 + [r_min]*2 + [r_min + k h, k = 1..K-1] + [r_end]*4``
   with ``r0 = FIRST_KNOT_A``: its cubic splines contain every mlmd basis function on
   ``[r0, r_end]`` (the double knot at ``r_min`` lets them turn linear, C1, below it).
   The coefficients are ``c' = c T`` with ``B(x) = N(x) T^T`` solved by least squares
   on points in every knot interval; the residual on a finer grid is measured and
   written into the file (about 1e-15: exact in float64).
2. Pairs. ``pair_style uf3`` sums ``V2`` over ordered pairs (a full neighbour list),
   mlmd over unordered ones: the pair coefficients are halved.
3. One-body energies ``e1[a]`` are not part of ``pair_style uf3``: the file's header
   comment carries them; :func:`mlmd.lammps.run_uf3` adds them, and the input lines of
   :func:`mlmd.lammps.uf3_input_lines` add them to a variable.

Three-body channels ``(a; b <= c)`` are written once as ``3B A B C``; LAMMPS fills
``(a; c, b)`` by transposing, and mlmd's same-species channels are symmetric already.
If ``cutoff_3body > cutoff`` the pair block reaches the three-body cutoff (LAMMPS
finds three-body neighbours in the pair list), zero beyond the pair cutoff.
Valid for all distances above ``r0`` (below it LAMMPS's uf3 has no basis). Before the
file is written LAMMPS evaluates it on :func:`~mlmd.training.export.probe_structures`
(plus a sheared cell and a compressed cluster), and energy, forces and virial must
equal mlmd's ASE calculator.
"""

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..errors import InputFileError, MLMDError
from ..io import PathLike, atomic_path, check_destination
from ..training.export import ExportMismatch, check_against_calculator, probe_structures, register_export_format

#: First knot (Å) of every axis in the file, as in UF3's own files: the spline is exact from here up.
FIRST_KNOT_A = 0.001
#: Largest basis-function difference (relative) the knot mapping may leave.
REFIT_TOLERANCE = 1e-10
#: Agreement the export check asks for (relative; absolute eV or eV/Å), by the model's dtype.
CHECK_RTOL = {"float64": 1e-8, "float32": 1e-5}
CHECK_ATOL_EV = {"float64": 1e-9, "float32": 1e-5}
CITATION = "Xie, Rupp and Hennig, npj Comput. Mater. 9, 162 (2023)"


@dataclass(frozen=True)
class SplineAxis:
    """One axis of a spline term: mlmd's uniform basis (``n_intervals + 3`` functions on
    ``[start, start + n_intervals * spacing]``, the first ``n_used`` carried over) and the uf3 knot
    vector that carries it, ``n_knot_intervals`` uniform intervals from ``start``."""
    start: float
    spacing: float
    n_intervals: int
    n_used: int
    n_knot_intervals: int

    @property
    def end(self) -> float:
        return self.start + self.n_knot_intervals * self.spacing

    def knots(self) -> np.ndarray:
        interior = self.start + self.spacing * np.arange(1, self.n_knot_intervals)
        head = [FIRST_KNOT_A] * 4 + [self.start] * 2 if self.start > FIRST_KNOT_A else [self.start] * 4
        return np.concatenate([head, interior, [self.end] * 4])

    def mlmd_basis(self, x: np.ndarray) -> np.ndarray:
        """mlmd's basis functions (linear continuation included) at ``x`` Å: ``[len(x), n_used]``."""
        import torch

        from potentials.blocks.bsplines import dense_basis

        values = dense_basis(torch.as_tensor(x, dtype=torch.float64), self.start, self.spacing, self.n_intervals)
        return values.numpy()[:, :self.n_used]

    def transform(self) -> Tuple[np.ndarray, float]:
        """``(T, error)``: coefficients ``c`` on mlmd's basis are ``c T`` on the uf3 knots; ``error`` is the
        largest ``|B(x) - N(x) T^T|`` on a grid of 50 points per knot interval (basis values are <= 1)."""
        from scipy.interpolate import BSpline

        knots = self.knots()
        edges = np.unique(knots)

        def points(fractions):
            return (edges[:-1, None] + np.diff(edges)[:, None] * fractions).ravel()

        fit_x = points(np.array([0.05, 0.27, 0.5, 0.73, 0.95]))
        design = BSpline.design_matrix(fit_x, knots, 3).toarray()
        solution, *_ = np.linalg.lstsq(design, self.mlmd_basis(fit_x), rcond=None)
        check_x = points(np.linspace(0.0, 1.0, 50, endpoint=False))
        error = np.abs(BSpline.design_matrix(check_x, knots, 3).toarray() @ solution - self.mlmd_basis(check_x))
        return solution.T, float(error.max())


def spline_potential(model):
    """The eager ``SplinePotential`` of a loaded spline ``model`` in float64 (the model's own code and
    weights: the source of every number written); refuses other families."""
    from potentials import FAMILIES

    if model.family != "spline":
        raise MLMDError(f"the uf3 format holds spline models only (LAMMPS pair_style uf3), and this model is family "
                        f"{model.family!r}; export it with --format metatomic (pair_style metatomic) or run it "
                        "through fix external (mlmd.lammps.run_external)")
    config = model.metadata.get("config")
    if config is None:
        raise MLMDError("this spline model file lacks its constructor config; re-export it with `mlmd export`")
    if config.get("repulsion", "none") != "none":
        # pair_style uf3 has no term for the model's short-range prior: the file would silently lack it.
        raise MLMDError(f"this spline model adds the {config['repulsion']!r} repulsion prior, which pair_style uf3 "
                        "cannot hold; export it with --format metatomic (pair_style metatomic) or run it "
                        "through fix external (mlmd.lammps.run_external)")
    module = FAMILIES["spline"].from_config(config).double()
    weights = model.module.state_dict()  # a TorchScript module lists its non-persistent buffers too
    missing = sorted(set(module.state_dict()) - set(weights))
    if missing:
        raise MLMDError(f"this spline model file lacks the weights {missing}; re-export it with `mlmd export`")
    module.load_state_dict({key: weights[key].detach().cpu().double() for key in module.state_dict()})
    return module.eval()


def numbers(values) -> str:
    return " ".join(f"{float(v)!r}" for v in np.ravel(values))


def block_header(kind: str, elements: Sequence[str]) -> List[str]:
    date = datetime.date.today().isoformat()
    return [f"#UF3 POT UNITS: metal DATE: {date} AUTHOR: mlmd CITATION: {CITATION}",
            f"{kind} {' '.join(elements)} 0 3 nk"]


def uf3_text(model) -> Tuple[str, float]:
    """The uf3 potential file of a spline ``model`` and the knot mapping's largest error (see the module)."""
    from ase.data import chemical_symbols

    spline = spline_potential(model)
    symbols = [chemical_symbols[z] for z in spline.species]
    cutoff = max(spline.cutoff_2body, spline.cutoff_3body)
    pair_axis = SplineAxis(spline.r_min, spline.spacing, spline.n_intervals, spline.n_intervals,
                           max(spline.n_intervals, int(np.ceil((cutoff - spline.r_min) / spline.spacing - 1e-9))))
    pair_map, worst = pair_axis.transform()
    with_3body = spline.use_3body
    one_body = spline.one_body.detach().double().tolist()
    lines = [f"# mlmd uf3 export of a spline model: pair_style uf3 {3 if with_3body else 2}, "
             f"pair_coeff * * FILE {' '.join(symbols)}",
             f"# mlmd species: {' '.join(str(z) for z in spline.species)}",
             f"# mlmd body: {3 if with_3body else 2}",
             f"# mlmd one_body_eV: {numbers(one_body)}",
             "# pair_style uf3 leaves out the one-body energies: E = E_uf3 + sum_i one_body_eV[type_i]"]
    pairs = spline.full_pair_coefficients().detach().double().numpy()[:, :spline.n_intervals]
    knots = pair_axis.knots()
    for a in range(len(symbols)):
        for b in range(a, len(symbols)):
            coefficients = 0.5 * pairs[int(spline.pair_index[a, b])] @ pair_map  # ordered pairs in LAMMPS
            lines += block_header("2B", [symbols[a], symbols[b]])
            lines += [f"{cutoff!r} {len(knots)}", numbers(knots), str(len(coefficients)), numbers(coefficients), "#"]
    if with_3body:
        side = SplineAxis(spline.r_min_3body, spline.spacing_3body, spline.n_intervals_3body,
                          spline.n_intervals_3body, spline.n_intervals_3body)
        across = SplineAxis(spline.r_min_3body, spline.spacing_3body, spline.n_intervals_jk,
                            spline.n_intervals_jk + 3, spline.n_intervals_jk)
        (side_map, side_error), (across_map, across_error) = side.transform(), across.transform()
        worst = max(worst, side_error, across_error)
        triplets = spline.full_triplet_coefficients().detach().double().numpy()
        n = spline.n_intervals_3body
        c3 = spline.cutoff_3body
        for a in range(len(symbols)):
            for b in range(len(symbols)):
                for c in range(b, len(symbols)):
                    free = triplets[int(spline.channel_index[a, b, c])][:n, :n, :]
                    coefficients = np.einsum("pqr,pi,qj,rk->ijk", free, side_map, side_map, across_map)
                    lines += block_header("3B", [symbols[a], symbols[b], symbols[c]])
                    lines += [f"{2 * c3!r} {c3!r} {c3!r} {len(across.knots())} {len(side.knots())} "
                              f"{len(side.knots())}", numbers(across.knots()), numbers(side.knots()),
                              numbers(side.knots()), " ".join(str(d) for d in coefficients.shape)]
                    lines += [numbers(row) for row in coefficients.reshape(-1, coefficients.shape[2])]
                    lines.append("#")
    lines.insert(4, f"# mlmd knot mapping error: {worst:.3g} (largest basis-function difference, relative)")
    return "\n".join(lines) + "\n", worst


@dataclass(frozen=True)
class UF3Header:
    """What a uf3 file tells the runner: atomic numbers in type order, one-body energies (eV, type order;
    zeros for files not written by mlmd) and whether it has three-body blocks (``body`` 2 or 3)."""
    species: List[int]
    one_body_eV: List[float]
    body: int

    @property
    def elements(self) -> List[str]:
        from ase.data import chemical_symbols

        return [chemical_symbols[z] for z in self.species]

    def types_of(self, atoms) -> np.ndarray:
        from .system import types_of

        return types_of(atoms, self.species)


def read_uf3_header(path: PathLike) -> UF3Header:
    """The :class:`UF3Header` of a uf3 file (mlmd's header comment, else the elements of its ``2B`` blocks)."""
    from ase.data import atomic_numbers

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"uf3 potential file {path} does not exist; write one with "
                             "`mlmd export MODEL -o FILE.uf3 --format uf3`")
    fields: Dict[str, List[str]] = {}
    elements: List[str] = []
    body = 2
    for line in path.read_text().splitlines():
        words = line.split()
        if line.startswith("# mlmd ") and len(words) > 2 and words[2].endswith(":"):
            fields[words[2][:-1]] = words[3:]
        elif words[:1] == ["2B"]:
            elements += [e for e in words[1:3] if e not in elements]
        elif words[:1] == ["3B"]:
            body = 3
    if not elements:
        raise InputFileError(f"{path} has no 2B block: not a uf3 potential file")
    if "species" in fields:
        species = [int(z) for z in fields["species"]]
        return UF3Header(species, [float(e) for e in fields["one_body_eV"]], int(fields["body"][0]))
    return UF3Header([atomic_numbers[e] for e in elements], [0.0] * len(elements), body)


def uf3_interaction(path: PathLike, header: UF3Header) -> List[str]:
    """The ``pair_style`` and ``pair_coeff`` lines of a uf3 file, atom types in ``header.species`` order."""
    return [f"pair_style uf3 {header.body}", f'pair_coeff * * "{path}" {" ".join(header.elements)}']


def check_structures(model) -> list:
    """:func:`probe_structures` plus a sheared periodic cell and the cluster compressed by 20 %."""
    periodic, cluster = probe_structures(model)
    sheared = periodic.copy()
    sheared.set_cell(periodic.cell.array @ np.array([[1.0, 0.0, 0.0], [0.15, 1.0, 0.0], [-0.1, 0.2, 1.0]]),
                     scale_atoms=True)
    compressed = cluster.copy()
    compressed.positions *= 0.8
    return [periodic, sheared, cluster, compressed]


def check_file(path: PathLike, model) -> float:
    """Run the uf3 file in LAMMPS (one rank) on :func:`check_structures`; raise :class:`ExportMismatch`
    unless energy, forces and (periodic cells) virial equal mlmd's ASE calculator. Returns the largest
    difference (eV, eV/Å)."""
    from ..ase.calculator import MLMDCalculator
    from .run import run_uf3

    rtol, atol = CHECK_RTOL.get(model.metadata["dtype"], 1e-5), CHECK_ATOL_EV.get(model.metadata["dtype"], 1e-5)
    structures = check_structures(model)
    results = []

    def evaluate(atoms):
        results.append(run_uf3(path, atoms, nprocs=1))
        return results[-1].energy, results[-1].forces

    worst = check_against_calculator("uf3", model, evaluate, structures, rtol=rtol, atol_eV=atol)
    calculator = MLMDCalculator(model)
    for atoms, result in zip(structures, results):
        if atoms.pbc.all():
            reference_atoms = atoms.copy()
            reference_atoms.calc = calculator
            reference = -atoms.get_volume() * reference_atoms.get_stress(voigt=False)
            difference = float(np.abs(result.virial - reference).max())
            worst = max(worst, difference)
            if not difference <= atol + rtol * max(float(np.abs(reference).max()), 1.0):
                raise ExportMismatch(f"the uf3 export's virial disagrees with mlmd's ASE calculator by "
                                     f"{difference:.3g} eV on a {len(atoms)}-atom cell; nothing was written. "
                                     "Report this with the model file")
    return worst


@register_export_format("uf3")
def write_uf3(model, output: PathLike, overwrite: bool = False) -> Path:
    """Write a spline ``model`` as a uf3 potential file after LAMMPS reproduces it (:func:`check_file`)."""
    output = Path(output)
    check_destination(output, "uf3 file", overwrite)
    text, error = uf3_text(model)
    if not error <= REFIT_TOLERANCE:
        raise ExportMismatch(f"the uf3 knots reproduce this spline's basis only to {error:.3g}; nothing was "
                             "written. Report this with the model file")
    with atomic_path(output) as temporary:
        temporary.write_text(text)
        check_file(temporary, model)
    return output
