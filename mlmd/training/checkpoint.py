"""The training checkpoint: its format, the one builder of its dict, writing, reading and RNG state.

A checkpoint is a ``torch.save`` dict, readable with ``weights_only=True``. Every
checkpoint holds the header ``format``, ``format_version``, ``kind``,
``mlmd_version``, ``family``, ``model_config`` (the family's ``config()``),
``dtype``, ``config`` (the validated training config), ``data_hash``, ``epoch``
and ``best_metric``; then, by kind:

- ``"training"`` (``checkpoint.pt``, written after every epoch): ``model``, ``ema``,
  ``ema_updates``, ``best_ema``, ``optimizer``, ``scheduler``, ``rng`` (torch, CUDA,
  numpy and python generator states), ``best_epoch``, ``bad_epochs``, ``history``:
  everything an exact resume needs;
- ``"best"`` (``best.pt``, written when the validation loss improves): ``ema`` (the
  EMA weights of that epoch) and ``metrics`` (its row of ``metrics.csv``). A snapshot
  (``snapshot-<M>min.pt``, ``training.snapshot_minutes``) is a ``"best"`` checkpoint of
  the best weights when the budget clock passed ``M`` minutes, plus ``snapshot``: the mark
  ``minutes``, ``budget_clock``, ``budget_s`` (seconds trained on that clock, all
  invocations), ``cpu_s`` and ``wall_s`` (process CPU and wall seconds of this invocation's
  training) and ``epochs`` (epochs done).
"""

import os
import random
from pathlib import Path
from typing import Any, Dict, Mapping, Union

from ..errors import InputFileError

CHECKPOINT_FORMAT = "mlmd-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"


def snapshot_file(minutes: float) -> str:
    """The file name of the snapshot at ``minutes`` on the budget clock: ``snapshot-5min.pt``, ``snapshot-0.5min.pt``"""
    return f"snapshot-{minutes:g}min.pt"


def build_checkpoint(kind: str, *, family: str, model_config: Mapping[str, Any], config: Mapping[str, Any],
                     data_hash: str, epoch: int, best_metric: float, **state: Any) -> Dict[str, Any]:
    """A checkpoint of ``kind`` (``"training"`` or ``"best"``): the common header plus ``state``."""
    from .. import __version__

    return {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "kind": kind,
        "mlmd_version": __version__, "family": family, "model_config": model_config,
        "dtype": config["training"]["dtype"], "config": config, "data_hash": data_hash,
        "epoch": epoch, "best_metric": best_metric, **state,
    }


def save_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> None:
    """Write ``checkpoint`` atomically to ``path``: a failed write leaves the old file as it was."""
    import torch

    from ..io import atomic_path

    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)


def load_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a training checkpoint (``checkpoint.pt`` or ``best.pt``), or raise a clear error.

    A folder stands for the ``checkpoint.pt`` inside it.
    """
    import torch

    from ..io import require_file

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    path = require_file(path, "checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise InputFileError(f"checkpoint {path} could not be read ({type(exc).__name__}); it is corrupt or not an "
                             "mlmd training checkpoint; use the checkpoint.pt or best.pt `mlmd train` wrote") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InputFileError(f"{path} is not an mlmd training checkpoint; use the checkpoint.pt or best.pt "
                             "that `mlmd train` wrote (an exported model is already a model file)")
    if checkpoint.get("format_version", 0) > CHECKPOINT_VERSION:
        raise InputFileError(f"checkpoint {path} was written by a newer mlmd; upgrade mlmd to read it")
    return checkpoint


def rng_state() -> Dict[str, Any]:
    """The states of torch's (CPU and CUDA), numpy's global and python's random generators, as tensors
    and plain values that ``torch.load(weights_only=True)`` reads back."""
    import numpy as np
    import torch

    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generator states that :func:`rng_state` recorded."""
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
