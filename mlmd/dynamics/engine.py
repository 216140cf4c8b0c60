"""The engine protocol every dynamics front-end drives, and the registry of engines.

An engine owns the state of a batch of replicas and knows how to advance it;
the driver (:mod:`mlmd.dynamics.driver`) decides when to stop, check, record
and save. An engine has:

- ``step``: the number of steps (or forecast intervals) taken so far;
- ``advance(n_steps, on_step)``: take ``n_steps``, calling ``on_step(k)`` as it
  goes; a failing force (or forecaster) call raises :class:`ForceCallFailed`;
- ``snapshot()``: a :class:`Snapshot` of the current state (NumPy, eV, Å, Å/fs, K);
- ``save_point()``: an opaque restore point of the current state, and
  ``restore(point)`` to go back to it (the driver keeps the last good one);
- ``payload(point)``: what the restart file stores for that point (a dict of
  tensors and plain values).

MD engines (``drives = "potential"``) also name their integrators
(``integrator_registry``), build themselves with ``create(atoms, model, calculator,
settings, restart)`` and refuse settings they cannot run with ``check(settings,
model, calculator)``.

Engines register by name with :func:`register_engine`; :func:`engine_class`
finds built-in ones in their own modules and others through the
``mlmd.engines`` entry-point group, so a new engine plugs in without editing a list.
"""

from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable, Dict, Optional, Protocol

import numpy as np

from ..errors import MLMDError
from ..registry import load_registered

ENGINES: Dict[str, Callable[..., "Engine"]] = {}

# Built-in engines live beside the code they drive; importing the module registers the engine.
BUILTIN_ENGINE_MODULES = {"torch": "mlmd.dynamics.torch_engine", "rollout": "mlmd.dynamics.rollout_engine",
                          "openmm": "mlmd.openmm.engine"}


@dataclass
class Snapshot:
    """One moment of a run, engine-independent: per-replica energies ``[K]`` and stacked atoms ``[K N, 3]``."""

    step: int
    ekin_eV: np.ndarray  # [K]
    temperature_K: np.ndarray  # [K]
    positions_A: np.ndarray  # [K N, 3] as the engine holds them (wrapped or not)
    velocities_A_per_fs: np.ndarray  # [K N, 3]
    cell_A: np.ndarray  # [3, 3] (every replica shares the cell)
    pbc: np.ndarray  # [3] bool
    epot_eV: Optional[np.ndarray] = None  # [K], None when the engine has no potential energy
    frame_positions_A: Optional[np.ndarray] = None  # [K N, 3] for trajectories (unwrapped); default positions_A
    forces_eV_per_A: Optional[np.ndarray] = None  # [K N, 3] for trajectories, None when the engine has none

    @property
    def replicas(self) -> int:
        return len(self.ekin_eV)

    @property
    def output_positions_A(self) -> np.ndarray:
        return self.positions_A if self.frame_positions_A is None else self.frame_positions_A


class Engine(Protocol):
    step: int

    def advance(self, n_steps: int, on_step: Callable[[int], Any]) -> None: ...

    def snapshot(self) -> Snapshot: ...

    def save_point(self) -> Any: ...

    def restore(self, point: Any) -> None: ...

    def payload(self, point: Any) -> dict: ...


class ForceCallFailed(Exception):
    """The energy/forces (or forecaster) call raised while an engine advanced; the message says where."""


def one_line(exc: BaseException) -> str:
    """The line of an exception's message that says what went wrong (TorchScript puts it last)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if len(lines) > 1 and "TorchScript" in lines[0] else f"{type(exc).__name__}: {lines[0]}"


class StateEngine:
    """Base of engines whose state is an :mod:`integrators` state in ``self.state``, advanced by
    :meth:`step_once` (one step or interval); the state itself is the restore point."""

    state: Any

    @property
    def step(self) -> int:
        return self.state.step

    def step_once(self, state):
        raise NotImplementedError

    def advance(self, n_steps: int, on_step: Callable[[int], Any]) -> None:
        state = self.state
        for _ in range(n_steps):
            state = self.step_once(state)
            on_step(1)
        self.state = state

    def save_point(self):
        return self.state

    def restore(self, point) -> None:
        self.state = point


def integrators_of(engine) -> Dict[str, Callable]:
    """The integrators an engine (class or instance) offers by name, from its ``integrator_registry``
    (``"module:attribute"``, imported on first use)."""
    module, _, attribute = engine.integrator_registry.partition(":")
    return getattr(import_module(module), attribute)


def register_engine(name: str):
    """Class decorator: make an engine available to the driver front-ends as ``ENGINES[name]``."""

    def decorate(cls):
        ENGINES[name] = cls
        cls.engine_name = name
        return cls

    return decorate


def engine_class(name: str):
    """The engine registered as ``name`` (built-in modules and ``mlmd.engines`` entry points are loaded on demand)."""
    engine = load_registered(name, ENGINES, BUILTIN_ENGINE_MODULES, "mlmd.engines",
                             lambda found, cls: register_engine(found)(cls))
    if engine is None:
        known = sorted(set(ENGINES) | set(BUILTIN_ENGINE_MODULES))
        raise MLMDError(f"unknown engine {name!r}; choose one of {', '.join(known)}")
    return engine


# Calls after which TorchScript's profiling executor runs a module's optimised graph: a continued run
# warms a fresh module up this often so that it repeats an uninterrupted run bit for bit.
WARM_UP_CALLS = 3


@dataclass
class MDSettings:
    """What every MD engine needs besides the structure and the potential (units in the names)."""

    integrator: str = "baoab"
    temperature_K: float = 300.0
    friction_per_ps: float = 1.0
    timestep_fs: float = 0.5
    seed: int = 0
    replicas: int = 1
    device: str = "cpu"
    platform: Optional[str] = None
