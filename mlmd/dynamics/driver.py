"""The run loop every dynamics front-end shares (``mlmd md``, ``mlmd forecast``, and any new engine).

The driver advances an engine (:mod:`mlmd.dynamics.engine`) to the next point
where something has to happen (a log row, a restart file, a guard check, an
observer), checks the new state with the guards, records it and saves restart
files; on a guard trip it saves the last good state and raises
:class:`~mlmd.dynamics.guards.UnstableRunError`.

Observers work as in ASE: ``driver.attach(function, interval, *args, **kwargs)``
calls ``function(*args, **kwargs)`` every ``interval`` steps (and at the start);
``driver.snapshot`` is the state just reached. :meth:`Driver.irun` is the
generator form: it yields each checked :class:`~mlmd.dynamics.engine.Snapshot`.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np

from ..constants import FS_NS, FS_PS, SECONDS_PER_DAY
from ..errors import MLMDError
from .engine import Engine, ForceCallFailed, Snapshot, one_line
from .guards import Guards, UnstableRunError
from .outputs import RunOutputs


def ns_per_day(steps: int, timestep_fs: float, seconds: float) -> float:
    """Simulation speed: ``steps`` of ``timestep_fs`` simulated in ``seconds`` of wall time, in ns/day."""
    if seconds <= 0:
        return float("nan")
    return steps * timestep_fs * FS_NS / seconds * SECONDS_PER_DAY


@dataclass
class RunResult:
    """What a run leaves behind: the final (last good) state and the files written."""

    step: int
    time_fs: float
    positions: np.ndarray  # [replicas, atoms, 3] Å (unwrapped)
    velocities: np.ndarray  # [replicas, atoms, 3] Å/fs
    log: np.ndarray  # [rows, len(header)]
    header: tuple = ()
    files: Dict[str, Path] = field(default_factory=dict)
    ns_per_day: float = float("nan")

    @property
    def ps_per_second(self) -> float:
        """Simulated ps per wall-clock second."""
        return self.ns_per_day * FS_PS / (FS_NS * SECONDS_PER_DAY)


def summary(command: str, result: RunResult) -> str:
    """The line a command prints when its run ends: where it got to, how fast, what it wrote."""
    written = ", ".join(str(path) for path in result.files.values())
    return (f"{command}: step {result.step} ({result.time_fs * FS_PS:.4g} ps), {result.ns_per_day:.3g} ns/day "
            f"({result.ps_per_second:.3g} ps/s); wrote {written}")


@dataclass
class Observer:
    function: Callable
    interval: int
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


class Driver:
    """Run ``engine`` up to ``total_steps``, recording every ``stride`` steps and saving every ``restart_every``.

    Args:
        engine: what advances the state (any object with the engine protocol).
        outputs: where rows, frames and restart files go.
        guards: the bounds checked at every check point.
        timestep_fs: simulated time per engine step (fs).
        time_of: simulated time (fs) of a step (default ``step * timestep_fs``).
        check_every: steps between guard checks (default: at log and restart points only).
        record_last: also record the final step when it is not a multiple of ``stride``.
        label: what the progress bar and the error messages call the run (``md``, ``forecast``).
        hint: what the error message of a guard trip advises.
    """

    def __init__(self, engine: Engine, outputs: RunOutputs, guards: Guards, *, total_steps: int, stride: int,
                 restart_every: int, timestep_fs: float, time_of: Optional[Callable[[int], float]] = None,
                 check_every: Optional[int] = None, record_last: bool = False, label: str = "run", hint: str = "",
                 progress: bool = False):
        self.engine, self.outputs, self.guards = engine, outputs, guards
        self.total_steps, self.stride, self.restart_every = int(total_steps), int(stride), int(restart_every)
        self.check_every, self.record_last = check_every, record_last
        self.timestep_fs = timestep_fs
        self.time_of = time_of or (lambda step: step * timestep_fs)
        self.label, self.hint, self.progress = label, hint, progress
        self.observers: List[Observer] = []
        self.snapshot: Optional[Snapshot] = None
        self.result: Optional[RunResult] = None

    def attach(self, function: Callable, interval: int = 1, *args, **kwargs) -> None:
        """Call ``function(*args, **kwargs)`` every ``interval`` steps (ASE's ``Dynamics.attach``)."""
        if not (isinstance(interval, int) and interval > 0):
            raise MLMDError(f"observer interval must be a positive whole number of steps, got {interval!r}")
        self.observers.append(Observer(function, interval, args, kwargs))

    def _notify(self, step: int) -> None:
        for observer in self.observers:
            if step % observer.interval == 0:
                observer.function(*observer.args, **observer.kwargs)

    def _next_stop(self, step: int) -> int:
        periods = [self.stride, self.restart_every, *(o.interval for o in self.observers)]
        if self.check_every is not None:
            periods.append(self.check_every)
        return min(self.total_steps, *((step // period + 1) * period for period in periods))

    def run(self) -> RunResult:
        """Run to the end (or to a guard trip) and return the :class:`RunResult`."""
        for _ in self.irun():
            pass
        return self.result

    def irun(self) -> Iterator[Snapshot]:
        """Generator form of :meth:`run`: yields the starting snapshot, then every checked one."""
        from tqdm import tqdm

        engine, outputs = self.engine, self.outputs
        snapshot = engine.snapshot()
        problem = self.guards.problem(snapshot, None)
        if problem:
            outputs.log.close()
            raise MLMDError(f"the starting state is unusable: {problem}; check the structure, the model "
                            "and the temperature")
        if not outputs.continued:
            outputs.record(snapshot, self.time_of(snapshot.step))
        good, good_point = snapshot, engine.save_point()
        self.snapshot = snapshot
        self._notify(snapshot.step)
        yield snapshot
        first_step, started, failure = snapshot.step, time.perf_counter(), None
        bar = tqdm(total=self.total_steps, initial=min(first_step, self.total_steps), unit="step",
                   disable=not self.progress, dynamic_ncols=True, desc=self.label)
        try:
            while engine.step < self.total_steps:
                before, target = engine.step, self._next_stop(engine.step)
                cause = None  # the exception behind a failed advance, kept for the traceback's "caused by"
                try:
                    engine.advance(target - before, bar.update)
                    snapshot = engine.snapshot()
                    problem = self.guards.problem(snapshot, good)
                except ForceCallFailed as exc:
                    problem, cause = str(exc), exc
                except Exception as exc:  # anything else a user's calculator or model raises
                    problem, cause = f"advancing from step {before} failed ({one_line(exc)})", exc
                if problem:
                    failure = (before, target, problem, cause)
                    engine.restore(good_point)
                    break
                good, good_point = snapshot, engine.save_point()
                self.snapshot = snapshot
                last = self.record_last and snapshot.step == self.total_steps
                if snapshot.step % self.stride == 0 or last:
                    outputs.record(snapshot, self.time_of(snapshot.step))
                if snapshot.step % self.restart_every == 0 and snapshot.step < self.total_steps:
                    outputs.checkpoint(engine.payload(good_point))
                self._notify(snapshot.step)
                speed = ns_per_day(snapshot.step - first_step, self.timestep_fs, time.perf_counter() - started)
                bar.set_postfix_str(f"{speed:.3g} ns/day, T={np.mean(snapshot.temperature_K):.0f} K", refresh=False)
                yield snapshot
        finally:
            bar.close()
            elapsed = time.perf_counter() - started
            files = outputs.finish(engine.payload(good_point))
        replicas = good.replicas
        shape = (replicas, len(good.positions_A) // replicas, 3)
        self.result = RunResult(
            step=good.step, time_fs=self.time_of(good.step), positions=good.output_positions_A.reshape(shape),
            velocities=good.velocities_A_per_fs.reshape(shape),
            log=np.array(outputs.rows, dtype=float).reshape(-1, len(outputs.header)), header=outputs.header,
            files=files, ns_per_day=ns_per_day(good.step - first_step, self.timestep_fs, elapsed))
        if failure is not None:
            self._fail(failure, good, files)

    def _fail(self, failure, good: Snapshot, files: Dict[str, Path]) -> None:
        before, target, problem, cause = failure
        state = self.outputs.save_state(good, self.time_of(good.step))
        if state is not None:
            files["last_good_state"] = state
        saved = ", ".join(f"{kind} {path}" for kind, path in files.items() if kind not in ("topology", "plot"))
        where = f"at step {target}" if target == before + 1 else f"between steps {before} and {target}"
        raise UnstableRunError(
            f"the {self.label} became unstable {where}: {problem}. Stopped; the last good state (step {good.step}) "
            f"is saved" + (f" ({saved})" if saved else "") + (f"; {self.hint}" if self.hint else ""),
            self.result) from cause
