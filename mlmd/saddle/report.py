"""Outputs of a saddle search: structure, mode, JSON summary and a convergence plot, all written atomically."""

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..io import atomic_path, atomic_write, write_frames


def write_structure(result, path) -> None:
    """The saddle (or best) structure as extended XYZ, with the summary in its info."""
    atoms = result.atoms.copy()
    atoms.calc = None
    for key, value in result.summary().items():
        if isinstance(value, (bool, int, float, str)):
            atoms.info[f"saddle_{key}"] = value
    write_frames(path, [atoms])


def write_mode(result, path) -> None:
    """The unit mode, one row of x y z per atom (zeros for fixed atoms), readable by numpy.loadtxt."""
    with atomic_write(path) as stream:
        np.savetxt(stream, result.mode, fmt="% .10f", header="saddle mode (unit vector over all atoms; rows = atoms)")


def write_summary(summary: dict, path) -> None:
    with atomic_write(path) as stream:
        json.dump(summary, stream, indent=2)
        stream.write("\n")


def write_plot(result, path, title: Optional[str] = None) -> None:
    """Energy (eV) and largest per-atom gradient (eV/Å) of every true evaluation against force calls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = np.array([h["call"] for h in result.history])
    energy = np.array([h["energy"] for h in result.history])
    fmax = np.array([h["fmax"] for h in result.history])
    search = np.array([h["kind"] != "verify" for h in result.history], dtype=bool)
    calls, energy, fmax = calls[search], energy[search], fmax[search]
    midpoint = np.array([h["kind"] not in ("image", "verify") for h in result.history], dtype=bool)[search]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(6, 5))
    top.plot(calls[midpoint], energy[midpoint], "o-", ms=3, label="midpoint")
    if (~midpoint).any():
        top.plot(calls[~midpoint], energy[~midpoint], "x", ms=4, label="dimer image")
    top.set_ylabel("energy (eV)")
    top.legend(fontsize=8)
    bottom.semilogy(calls[midpoint], fmax[midpoint], "o-", ms=3)
    bottom.set_ylabel("max |∇E| per atom (eV/Å)")
    bottom.set_xlabel("true force calls")
    fig.suptitle(title or f"{result.method}: {result.status}")
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format=Path(path).suffix.lstrip(".") or "png", dpi=100)
    plt.close(fig)
