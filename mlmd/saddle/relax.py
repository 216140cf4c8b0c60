"""Relaxation from a confirmed saddle down both sides of its mode to the two minima, and the barrier.

FIRE (ASE) rather than a quasi-Newton optimiser: started next to a saddle,
BFGS and L-BFGS can stall on the ridge, FIRE only goes downhill. The forward
barrier is ``E_saddle - E_min`` on the side of the start, the reverse barrier
on the other side (eV).
"""

import numpy as np

from .dimer import max_atom_norm

#: relaxations stop at max(search fmax, this) eV/Å
RELAX_FMAX_FLOOR = 0.005


def relax_from(start_atoms, calculator, free, x, fmax, max_steps: int = 1000):
    """FIRE from free coordinates ``x`` (Å) with the other atoms fixed; returns ``(atoms, calls, converged)``.

    A failed evaluation (ASE's ``CalculationFailed``: an SCF that does not converge) ends the relaxation at
    the last point that was evaluated (``x`` itself when none was), not converged;
    ``atoms.info["relax_error"]`` says why."""
    from ase.calculators.calculator import CalculationFailed
    from ase.constraints import FixAtoms
    from ase.optimize import FIRE

    atoms = start_atoms.copy()
    atoms.set_constraint(FixAtoms(indices=np.setdiff1d(np.arange(len(atoms)), free)))
    atoms.positions[free] = np.asarray(x).reshape(-1, 3)
    atoms.calc = calculator
    calls = [0]
    last_good = [atoms.positions.copy()]

    def count():
        calls[0] += 1
        last_good[0] = atoms.positions.copy()

    optimizer = FIRE(atoms, logfile=None)
    optimizer.attach(count)
    target = max(fmax, RELAX_FMAX_FLOOR)
    try:
        optimizer.run(fmax=target, steps=max_steps)
    except CalculationFailed as exc:
        atoms.positions = last_good[0]
        atoms.info["relax_error"] = f"the potential failed during the relaxation ({exc})"
        return atoms, calls[0], False
    return atoms, calls[0], bool(max_atom_norm(atoms.get_forces()[free].ravel()) < target)


def relax_both_sides(result, calculator, start_atoms, free, x0, fmax, step_A: float = 0.1,
                     max_steps: int = 1000) -> list:
    """Relax from saddle ± ``step_A`` (Å) along the mode; fill ``result``'s minima, barriers and relax_calls.
    Returns the two relaxed structures, the start's side first."""
    x_saddle = result.atoms.positions[free].ravel()
    mode = result.mode[free].ravel()
    minima, structures = [], {}
    for sign in (+1, -1):
        atoms, calls, converged = relax_from(start_atoms, calculator, free, x_saddle + sign * step_A * mode, fmax,
                                             max_steps)
        x_min = atoms.positions[free].ravel()
        structures[sign] = atoms
        energy = float("nan") if calls == 0 else float(atoms.get_potential_energy())
        minima.append({"side": sign, "energy": energy, "calls": calls,
                       "converged": converged, "projection_A": float((x_min - x_saddle) @ mode)})
        if "relax_error" in atoms.info:
            minima[-1]["error"] = atoms.info["relax_error"]
    start_side = +1 if float((x0 - x_saddle) @ mode) >= 0 else -1
    first = next(m for m in minima if m["side"] == start_side)
    other = next(m for m in minima if m["side"] != start_side)
    result.minima = [first, other]
    result.barrier = result.energy - first["energy"]
    result.reverse_barrier = result.energy - other["energy"]
    result.relax_calls = sum(m["calls"] for m in minima)
    return [structures[start_side], structures[-start_side]]
