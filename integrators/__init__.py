"""Time-steppers on a torch state (torch only), in the style of plain ``step`` functions.

``INTEGRATORS`` maps a scheme name to ``step(state, energy_forces, timestep) ->
state``; :func:`integrators.state.init_state` builds the state. A new scheme
registers itself with :func:`register_integrator`; schemes from other
distributions plug in through the ``mlmd.integrators`` entry-point group.
"""

from importlib import import_module
from importlib.metadata import entry_points
from typing import Callable, Dict

INTEGRATORS: Dict[str, Callable] = {}


def register_integrator(name: str):
    """Decorator: make ``step`` available as ``INTEGRATORS[name]``."""

    def decorate(step: Callable) -> Callable:
        INTEGRATORS[name] = step
        return step

    return decorate


for _module in ("integrators.langevin", "integrators.verlet"):
    import_module(_module)
for _entry in entry_points(group="mlmd.integrators"):
    INTEGRATORS.setdefault(_entry.name, _entry.load())
