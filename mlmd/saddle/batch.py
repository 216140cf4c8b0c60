"""Many saddle searches in parallel: local processes, or a Dask cluster given a scheduler address.

Each task is a plain dict (start file, calculator name or model path,
:class:`~mlmd.saddle.settings.SaddleSettings`, output paths) so that it pickles to any worker; the worker builds its
own calculator, runs :func:`mlmd.saddle.search`, writes its files and returns
its summary row. :func:`write_table` writes the rows as one CSV table.
"""

import csv
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional

from ..errors import MLMDError
from ..io import atomic_write

TABLE_COLUMNS = ["start", "converged", "energy", "curvature", "fmax", "force_calls", "wall_s", "gp_s", "barrier",
                 "reverse_barrier", "method", "structure", "status", "verified", "verify_calls", "message"]


def run_task(task: Dict) -> Dict:
    """Run one search described by ``task`` and write its outputs; returns its summary row."""
    from ..io import read_structure
    from . import report
    from .search import search_with_settings

    row = {"start": task["start"], "structure": task.get("structure")}
    try:
        atoms = read_structure(task["start"])
        result = search_with_settings(atoms, task["settings"], calculator=task.get("calculator"),
                                      model=task.get("model"))
    except MLMDError as exc:
        row.update(converged=False, status="error", message=f"error: {exc}")
        return row
    if task.get("structure"):
        report.write_structure(result, task["structure"])
    if task.get("mode"):
        report.write_mode(result, task["mode"])
    if task.get("plot"):
        report.write_plot(result, task["plot"], title=f"{task['start']}: {result.method}")
    summary = result.summary()
    if task.get("json"):
        report.write_summary(summary, task["json"])
    row.update({k: summary.get(k) for k in TABLE_COLUMNS if k in summary})
    return row


def run_batch(tasks: List[Dict], workers: int = 1, scheduler: Optional[str] = None, on_done=None) -> List[Dict]:
    """Run tasks on ``workers`` local processes, or on the Dask cluster at ``scheduler``; rows in task order."""
    if scheduler:
        try:
            from dask.distributed import Client
        except ImportError as exc:
            raise MLMDError("a Dask scheduler address was given but dask.distributed is not installed; "
                            "install it with `pip install 'dask[distributed]'` or run on local processes "
                            "(--workers N)") from exc
        try:
            client = Client(scheduler)
        except OSError as exc:
            raise MLMDError(f"cannot reach the Dask scheduler at {scheduler}: {exc}; check the address") from exc
        try:
            futures = client.map(run_task, tasks, pure=False)
            rows = client.gather(futures)
        finally:
            client.close()
        if on_done is not None:
            for row in rows:
                on_done(row)
        return rows
    if workers <= 1 or len(tasks) == 1:
        rows = []
        for task in tasks:
            rows.append(run_task(task))
            if on_done is not None:
                on_done(rows[-1])
        return rows
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_task, task) for task in tasks]
        rows = []
        for future in futures:
            rows.append(future.result())
            if on_done is not None:
                on_done(rows[-1])
    return rows


def write_table(rows: List[Dict], path) -> None:
    """One CSV row per start with the summary columns."""
    with atomic_write(path) as stream:
        writer = csv.DictWriter(stream, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
