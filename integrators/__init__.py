"""Time-steppers on a torch state (torch only), in the style of plain ``init`` and ``step`` functions.

``INTEGRATORS`` maps a scheme name to ``step(state, energy_forces, timestep) -> state``;
:func:`integrators.state.init_state` builds the state. A new scheme registers itself with
:func:`register_integrator`; schemes from other distributions plug in through the
``mlmd.integrators`` entry-point group.

``MOMENTUM_CONSERVING`` names the schemes that keep total momentum (and, for an isolated system,
angular momentum) exactly when the forces do: velocity Verlet and CSVR (one scalar rescale per
replica). Only for those do conserved components leave the degrees of freedom
(:func:`integrators.state.conserved_components`); a scheme from another distribution counts all.

Layout (units Å, fs, eV, masses in eV·fs²/Å², kT in eV):

- ``state.py``: the state hierarchy (``SystemState`` → ``MDState``, ``RolloutState``), its one
  constructor, kinetic energy, degrees of freedom, Maxwell-Boltzmann velocities
- ``splitting.py``: the shared pieces: kick (B), drift (A), Ornstein-Uhlenbeck (O), step noise
- ``noise.py``: counter-based Gaussian noise (reproducible per seed, step and atom)
- ``langevin.py``: ``baoab``, ``obabo``, ``gjf``;  ``verlet.py``: ``verlet``;
  ``csvr.py``: the CSVR thermostat and ``csvr``
- ``rollout.py``: ``init`` and ``step`` of the trajectory-forecaster rollout (with CSVR)
"""

from importlib import import_module
from importlib.metadata import entry_points
from typing import Callable, Dict, Set

INTEGRATORS: Dict[str, Callable] = {}
MOMENTUM_CONSERVING: Set[str] = set()


def register_integrator(name: str, conserves_momentum: bool = False):
    """Decorator: make ``step`` available as ``INTEGRATORS[name]`` (and in ``MOMENTUM_CONSERVING`` when
    ``conserves_momentum``: the step changes Σ m v and Σ m r × v only through the forces)."""

    def decorate(step: Callable) -> Callable:
        INTEGRATORS[name] = step
        if conserves_momentum:
            MOMENTUM_CONSERVING.add(name)
        return step

    return decorate


for _module in ("integrators.langevin", "integrators.verlet", "integrators.csvr"):
    import_module(_module)
for _entry in entry_points(group="mlmd.integrators"):
    INTEGRATORS.setdefault(_entry.name, _entry.load())
