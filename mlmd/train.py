"""Training (``mlmd train``) and exporting a training checkpoint (``mlmd export``).

This module owns the training checkpoint format, so both the trainer and the
command that turns a checkpoint into a model file live here.

Config
------
A JSON (``.json``) or TOML (``.toml``) file, or the same nested dict from
Python. Relative paths in a file are relative to the file's folder; in a dict,
to the current directory. Every key but ``data.path`` and ``model.family``
has a default (see :data:`SCHEMA`)::

    [data]
    path = "cu.xyz"              # extended XYZ with energy, forces (stress optional)
    validation_fraction = 0.1
    test_fraction = 0.1
    seed = 0                     # seed of the train/validation/test split
    batch_size = 8

    [model]
    family = "equivariant"       # any name in potentials.FAMILIES
    cutoff = 5.0                 # every other key goes to the family's constructor
    channels = 32

    [training]
    epochs = 100                 # total, counting epochs before a resume
    lr = 0.005
    weight_decay = 0.0
    energy_weight = 1.0          # loss = w_E MSE(E/atom) + w_F MSE(F) + w_S MSE(stress)
    force_weight = 10.0
    stress_weight = 1.0
    ema_decay = 0.99
    lr_factor = 0.5              # ReduceLROnPlateau on the validation loss
    lr_patience = 10
    early_stopping_patience = 30
    max_time_min = 60            # wall-clock budget of this invocation, checked after each epoch
    num_threads = 1              # torch CPU threads; 1 wins whenever other work shares the cores
    grad_clip_norm = 10.0
    seed = 0
    dtype = "float64"
    device = "auto"

    [output]
    directory = "training"

Model construction
------------------
The model is ``FAMILIES[model.family]``, built with its ``from_config(kwargs)``
classmethod (or its constructor when it has none). The trainer fills in the
constructor arguments that come from the data, each only when the family's
constructor has a parameter of that name and the config does not set it:

- ``species``: the elements of the dataset (sorted atomic numbers)
- ``avg_num_neighbors``: mean neighbour count within ``cutoff`` (training frames)
- ``atomic_energies_ref``: least-squares per-element energies, in ``species`` order
- ``scale``: the RMS of the training forces (eV/Å)
- ``shift``: the mean per-atom energy left after the reference energies (eV)

A family that needs something else defines a classmethod
``from_dataset(model_config, statistics)`` returning the module; it gets the
model section (without ``family``) and a dict holding all of the above plus
``reference_energies`` ``{Z: eV}``, ``force_rms``, ``energy_per_atom_rms``,
``n_frames`` and ``n_atoms``. A family should define ``config()`` returning its
constructor arguments; the checkpoint stores them so that ``mlmd export`` and
``--resume`` rebuild the same model.

Linear families
---------------
A family whose model defines ``fit_linear(batches, energy_weight=, force_weight=)``
(the ``spline`` family) has an energy linear in its parameters: epoch 1 calls it
once on every training frame (float64 collated batches of ``data.batch_size``),
the EMA takes the fitted weights as they are, and no gradient epochs follow.
Validation, checkpoints, ``summary.json`` and export work as below.

Objectives
----------
What a family is trained on is its *objective* (:data:`OBJECTIVES`), named by the
family's class attribute ``training_objective`` (default ``"potential"``): the
objective owns the config schema of ``[data]`` and ``[training]``, the dataset and
its split, the model's construction from the data, the batches, the loss of one
batch and the validation metrics (:class:`PotentialObjective` documents the
interface). Everything else (optimizer, EMA, schedule, early stopping,
checkpoints, exact resume, time budget, threads, DDP, export) is shared.

- ``potential``: energies, forces and stress of labelled frames, as above;
- ``trajectory`` (family ``forecaster``, :mod:`mlmd.trajectories`): pairs of
  reference MD frames ``interval_steps`` apart. Its config::

    [data]
    path = "ethanol-trajectories"   # folder of run-*.h5 (mlmd generate --trajectory), glob or list
    interval_steps = 20              # reference MD steps per forecaster call
    pair_stride = 10                 # every 10th recorded frame starts a pair
    validation_runs = 1              # whole runs: the last test_runs test, the validation_runs before validate
    test_runs = 0
    batch_size = 8

    [training]                       # every key above except the energy/force/stress weights, plus
    displacement_weight = 1.0        # L = w_d MSE(x/s_d) + w_v MSE(v/s_v) per step (normalised targets)
    velocity_weight = 1.0
    rollout_steps = 1                # k > 1: unroll k calls on predictions, backpropagate through all
    rollout_weight = 1.0             # weight of steps 2..k
    time_reversal = false            # train also on reversed pairs (x', -v') -> (x, -v)

Training
--------
AdamW; loss as above, stress only on frames that carry a stress label; an exponential
moving average (EMA) of the weights with warm-up ``min(decay, (1+n)/(10+n))``
after ``n`` steps, which is what validation, ``best.pt`` and export use;
ReduceLROnPlateau and early stopping on the validation loss of the EMA weights
(the training frames stand in when the validation split is empty); gradient
clipping by total norm. Each epoch, rank 0 atomically writes ``checkpoint.pt``,
``metrics.csv``, ``learning_curve.png`` and, on improvement, ``best.pt`` in the
output directory; ``summary.json`` at the end holds the best epoch and the test
metrics of the best weights. A non-finite loss stops the run with the last good
checkpoint kept.

``--resume`` continues from ``checkpoint.pt`` exactly: weights, optimizer,
scheduler, EMA, RNG states (torch, numpy, python), epoch, best metric and
early-stopping counter. The epoch's shuffle is seeded by ``(seed, epoch)``.
On CPU, a run resumed after any epoch ends with bitwise the same weights as an
uninterrupted one. The resumed run keeps the checkpoint's model, optimizer and
scheduler state; the dataset, split and dtype must not change.

Distributed
-----------
Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each process joins a
process group (nccl on CUDA, gloo on CPU), takes every ``WORLD_SIZE``-th frame
of the epoch's shuffled (padded) training indices and trains a
``DistributedDataParallel`` copy of the model. The model contract takes forces
by ``torch.autograd.grad`` on the positions inside ``forward``; that touches no
parameter's gradient accumulator, so DDP's reducer sees exactly one backward
per step and works with its defaults. Set ``training.find_unused_parameters``
for a family with parameters that some batches do not use. Validation is
sharded the same way and its sums all-reduced, so every rank takes the same
scheduler and early-stopping decisions. Only rank 0 writes files (its RNG
states go into the checkpoint); the output folder must be shared by all ranks.
Exact resume is promised for one CPU process; CUDA's scatter-adds are not
deterministic.
"""

import copy
import csv
import difflib
import inspect
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from .cli import Command
from .errors import InputFileError, MLMDError

CHECKPOINT_FORMAT = "mlmd-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
METRICS_FILE = "metrics.csv"
CURVE_FILE = "learning_curve.png"
SUMMARY_FILE = "summary.json"

METRIC_COLUMNS = [
    "epoch", "lr", "train_loss", "val_loss",
    "val_energy_mae_meV_per_atom", "val_energy_rmse_meV_per_atom",
    "val_force_mae_meV_per_A", "val_force_rmse_meV_per_A",
    "val_stress_mae_meV_per_A3", "time_s",
]

# Constructor arguments the trainer derives from the dataset (see the module docstring).
DATA_DERIVED = ("species", "avg_num_neighbors", "atomic_energies_ref", "scale", "shift")

# --- config -------------------------------------------------------------------

_REQUIRED = object()


def _number(minimum=None, maximum=None, strict_min=False, strict_max=False, integer=False, optional=False):
    """A check for a numeric value; returns an error text or None."""

    def check(value):
        if value is None and optional:
            return None
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            return f"must be {kind}{' or null' if optional else ''}, got {value!r}"
        if not math.isfinite(value):
            return f"must be finite, got {value!r}"
        if minimum is not None and (value <= minimum if strict_min else value < minimum):
            return f"must be {'>' if strict_min else '>='} {minimum}, got {value!r}"
        if maximum is not None and (value >= maximum if strict_max else value > maximum):
            return f"must be {'<' if strict_max else '<='} {maximum}, got {value!r}"
        return None

    return check


def _string(choices=None):
    def check(value):
        if not isinstance(value, str) or not value:
            return f"must be a non-empty string, got {value!r}"
        if choices is not None and value not in choices:
            return f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
        return None

    return check


def _device(value):
    if not isinstance(value, str):
        return f"must be a string such as 'auto', 'cpu', 'cuda' or 'cuda:1', got {value!r}"
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return None
    return f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}"


def _boolean(value):
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


# section -> key -> (default, check, example used in the error message)
SCHEMA: Dict[str, Dict[str, tuple]] = {
    "data": {
        "path": (_REQUIRED, _string(), '"data.xyz"'),
        "validation_fraction": (0.1, _number(0, 1, strict_max=True), "0.1"),
        "test_fraction": (0.1, _number(0, 1, strict_max=True), "0.1"),
        "seed": (0, _number(0, integer=True), "0"),
        "batch_size": (8, _number(1, integer=True), "8"),
        "validation_batch_size": (None, _number(1, integer=True, optional=True), "32"),
    },
    "training": {
        "epochs": (100, _number(1, integer=True), "100"),
        "lr": (1e-3, _number(0, strict_min=True), "0.001"),
        "weight_decay": (0.0, _number(0), "0.0"),
        "energy_weight": (1.0, _number(0), "1.0"),
        "force_weight": (10.0, _number(0), "10.0"),
        "stress_weight": (1.0, _number(0), "1.0"),
        "ema_decay": (0.99, _number(0, 1, strict_max=True), "0.99 (0 turns the average off)"),
        "lr_factor": (0.5, _number(0, 1, strict_min=True, strict_max=True), "0.5"),
        "lr_patience": (10, _number(0, integer=True), "10"),
        "min_lr": (0.0, _number(0), "1e-6"),
        "early_stopping_patience": (30, _number(1, integer=True, optional=True), "30 (null turns it off)"),
        "num_threads": (None, _number(1, integer=True, optional=True), "1 (null: torch's default)"),
        "max_time_min": (None, _number(0, strict_min=True, optional=True), "60 (null: no limit)"),
        "grad_clip_norm": (10.0, _number(0, strict_min=True, optional=True), "10.0 (null turns it off)"),
        "seed": (0, _number(0, integer=True), "0"),
        "dtype": ("float64", _string(("float32", "float64")), '"float64"'),
        "device": ("auto", _device, '"auto"'),
        "find_unused_parameters": (False, _boolean, "false"),
    },
    "output": {
        "directory": ("training", _string(), '"training"'),
        "learning_curve": (True, _boolean, "true"),
    },
}
SECTIONS = ("data", "model", "training", "output")


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_config(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a JSON or TOML config file into a nested dict (not yet validated)."""
    from .io import require_file

    path = require_file(path, "training config")
    text = path.read_text()
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise MLMDError(f"reading TOML config {path} needs Python 3.11 (or tomli); write it as JSON") from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputFileError(f"config {path} is not valid TOML: {exc}; fix the line it names") from exc
    if path.suffix.lower() == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"config {path} is not valid JSON: {exc}; fix the line it names") from exc
        if not isinstance(config, dict):
            raise InputFileError(f"config {path} must hold a JSON object with sections {', '.join(SECTIONS)}")
        return config
    raise InputFileError(f"config {path} must end in .json or .toml so its format is known; rename it")


def validate_config(config: Mapping[str, Any], base: Union[str, os.PathLike, None] = None,
                    source: str = "config") -> Dict[str, Any]:
    """Check a config, fill in defaults and make paths absolute (relative to ``base``).

    Raises :class:`MLMDError` naming the bad key and the fix.
    """
    base = Path(base) if base is not None else Path.cwd()
    if not isinstance(config, Mapping):
        raise MLMDError(f"{source} must be a mapping with sections {', '.join(SECTIONS)}")
    model_section = config.get("model")
    family = model_section.get("family") if isinstance(model_section, Mapping) else None
    objective = objective_class(family if isinstance(family, str) else None)
    schema = objective.schema()
    for section in config:
        if section not in SECTIONS:
            raise MLMDError(f"{source}: unknown section {section!r}{_suggest(section, SECTIONS)}; "
                            f"the sections are {', '.join(SECTIONS)}")
    result: Dict[str, Any] = {}
    for section, keys in schema.items():
        given = config.get(section, {})
        if not isinstance(given, Mapping):
            raise MLMDError(f"{source}: section {section!r} must be a table of keys, got {given!r}")
        for key in given:
            if key not in keys:
                raise MLMDError(f"{source}: unknown key {section}.{key}{_suggest(key, keys)}; "
                                f"the keys of [{section}] are {', '.join(keys)}")
        values = {}
        for key, (default, check, example) in keys.items():
            if key not in given:
                if default is _REQUIRED:
                    raise MLMDError(f"{source}: {section}.{key} is missing; add it, e.g. {key} = {example}")
                values[key] = default
                continue
            problem = check(given[key])
            if problem:
                raise MLMDError(f"{source}: {section}.{key} {problem}; set e.g. {key} = {example}")
            values[key] = given[key]
        result[section] = values
    objective.finish_config(result, base, source)
    result["output"]["directory"] = str((base / result["output"]["directory"]).resolve())

    model = config.get("model")
    if not isinstance(model, Mapping):
        raise MLMDError(f"{source}: section [model] is missing; add it with family = \"equivariant\" "
                        "(or another name in potentials.FAMILIES) and the family's hyperparameters")
    if "family" not in model:
        raise MLMDError(f"{source}: model.family is missing; add it, e.g. family = \"equivariant\"")
    if not isinstance(model["family"], str) or not model["family"]:
        raise MLMDError(f"{source}: model.family must be a family name string, got {model['family']!r}")
    result["model"] = json.loads(json.dumps(dict(model)))  # plain, JSON-able values only
    return result


def load_config(config: Union[Mapping[str, Any], str, os.PathLike]) -> Dict[str, Any]:
    """A validated config from a file path or a dict."""
    if isinstance(config, Mapping):
        return validate_config(config)
    path = Path(config)
    return validate_config(read_config(path), base=path.parent, source=f"config {path}")


# --- model construction ---------------------------------------------------------

def family_class(name: str):
    """The class registered as model family ``name``, or a clear error."""
    from potentials import FAMILIES

    if name not in FAMILIES:
        known = ", ".join(sorted(FAMILIES)) or "none registered"
        raise MLMDError(f"unknown model family {name!r}{_suggest(name, FAMILIES)}; "
                        f"set model.family to one of: {known}")
    return FAMILIES[name]


def _constructor_parameters(cls):
    """(names, accepts **kwargs, required names) of ``cls``'s constructor."""
    signature = inspect.signature(cls.__init__)
    parameters = [p for p in signature.parameters.values() if p.name != "self"]
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    var_keyword = any(p.kind == p.VAR_KEYWORD for p in parameters)
    required = [p.name for p in parameters
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty]
    defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
    return names, var_keyword, required, defaults


def build_model(family: str, kwargs: Mapping[str, Any]):
    """Instantiate family ``family`` from constructor arguments (its ``from_config`` when defined)."""
    cls = family_class(family)
    try:
        if hasattr(cls, "from_config"):
            return cls.from_config(dict(kwargs))
        return cls(**kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise MLMDError(f"model family {family!r} rejected its hyperparameters: {exc}; "
                        "fix the [model] section") from exc


def model_config_of(module, kwargs: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Constructor arguments that rebuild ``module`` (its ``config()`` when it has one)."""
    if hasattr(module, "config"):
        config = module.config()
    elif kwargs is not None:
        config = dict(kwargs)
    else:
        raise MLMDError(f"model family {module.family!r} defines from_dataset but no config(); "
                        "it must define config() returning its constructor arguments")
    return json.loads(json.dumps(config))


def dataset_statistics(dataset, indices: Sequence[int], cutoff: float) -> Dict[str, Any]:
    """Everything a family may take from the data (see the module docstring)."""
    import numpy as np

    stats = dict(dataset.statistics(cutoff, indices))
    references = dataset.reference_energies(indices)
    residuals = []
    for index in indices:
        numbers = dataset.frames[index].numbers
        residuals.append((float(dataset.labels[index]["energy"]) - sum(references[int(z)] for z in numbers))
                         / len(numbers))
    force_rms = stats["force_rms"]
    stats.update(
        species=list(dataset.species),
        reference_energies=references,
        atomic_energies_ref=[references[z] for z in dataset.species],
        scale=force_rms if force_rms > 0 else 1.0,
        shift=float(np.mean(residuals)),
    )
    return stats


def model_from_dataset(model_section: Mapping[str, Any], dataset, indices: Sequence[int]):
    """Build the configured family, filling data-derived constructor arguments.

    Returns ``(module, model_config)`` where ``model_config`` rebuilds the module.
    """
    return model_from_statistics(model_section, lambda cutoff: dataset_statistics(dataset, indices, cutoff),
                                 DATA_DERIVED)


def model_from_statistics(model_section: Mapping[str, Any], statistics, derived: Sequence[str]):
    """Build the configured family from ``statistics(cutoff) -> dict`` of the training data.

    Every name in ``derived`` that the constructor takes and the model section does not
    set is filled from the statistics (see the module docstring); a family with a
    ``from_dataset(model_config, statistics)`` classmethod builds itself instead.
    Returns ``(module, model_config)``.
    """
    family = model_section["family"]
    cls = family_class(family)
    given = {k: v for k, v in model_section.items() if k != "family"}
    names, var_keyword, required, defaults = _constructor_parameters(cls)
    if not var_keyword:
        for key in given:
            if key not in names:
                raise MLMDError(f"model.{key} is not a hyperparameter of family {family!r}"
                                f"{_suggest(key, names)}; its hyperparameters are: {', '.join(names)}")
    cutoff = given.get("cutoff", defaults.get("cutoff"))
    if cutoff is None:
        raise MLMDError(f"model.cutoff is missing and family {family!r} has no default; add it, e.g. cutoff = 5.0")
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or cutoff <= 0:
        raise MLMDError(f"model.cutoff must be a positive number (Å), got {cutoff!r}")
    stats = statistics(float(cutoff))
    if "species" in given:
        missing = sorted(set(stats["species"]) - {int(z) for z in given["species"]})
        if missing:
            raise MLMDError(f"the dataset contains elements {missing} that model.species {given['species']} "
                            "lacks; add them or remove model.species to take the dataset's elements")
    if hasattr(cls, "from_dataset"):
        try:
            module = cls.from_dataset(dict(given), stats)
        except (TypeError, ValueError, KeyError) as exc:
            raise MLMDError(f"model family {family!r} rejected its hyperparameters: {exc}; "
                            "fix the [model] section") from exc
        return module, model_config_of(module, None)
    kwargs = dict(given)
    for key in derived:
        if key in names and key not in kwargs:
            kwargs[key] = stats[key]
    absent = [name for name in required if name not in kwargs]
    if absent:
        raise MLMDError(f"model.{absent[0]} is required by family {family!r}; add it to the [model] section")
    module = build_model(family, kwargs)
    return module, model_config_of(module, kwargs)


# --- exponential moving average --------------------------------------------------

class EMA:
    """Exponential moving average of a module's parameters.

    ``module`` is a copy of the trained model whose parameters are the shadow
    weights; validation and export use it. After ``n`` updates the decay is
    ``min(decay, (1 + n) / (10 + n))`` so that early averages are not dominated
    by the random initial weights. ``decay == 0`` tracks the weights exactly.
    """

    def __init__(self, model, decay: float):
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.updates = 0

    def update(self, model) -> None:
        import torch

        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        with torch.no_grad():
            for shadow, parameter in zip(self.module.parameters(), model.parameters()):
                if decay == 0.0:
                    shadow.copy_(parameter)
                else:
                    shadow.lerp_(parameter.detach(), 1.0 - decay)
            for shadow, buffer in zip(self.module.buffers(), model.buffers()):
                shadow.copy_(buffer)
        self.updates += 1

    def state_dict(self) -> Dict[str, Any]:
        return self.module.state_dict()


# --- distributed -----------------------------------------------------------------

@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_name: str):
    """Join a process group when started by torchrun; returns (info, device)."""
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise MLMDError(f"training.device is {device_name!r} but torch sees no CUDA device; "
                        "set device = \"cpu\" or \"auto\"")
    info = _Distributed(rank=rank, world_size=world_size, local_rank=local_rank)
    if device_name.startswith("cuda"):
        device = torch.device("cuda", local_rank) if world_size > 1 else torch.device(device_name)
        if device.index is not None:
            torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        info.initialized_here = True
    if world_size > 1:
        info.rank, info.world_size = dist.get_rank(), dist.get_world_size()
    return info, device


def _all_reduce(tensor, info: _Distributed):
    if info.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def _barrier(info: _Distributed) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


# --- RNG state -----------------------------------------------------------------

def _rng_state() -> Dict[str, Any]:
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


def _set_rng_state(state: Mapping[str, Any]) -> None:
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


# --- loss and metrics ----------------------------------------------------------

def _to_device(batch: Dict[str, Any], device) -> Dict[str, Any]:
    return {key: value.to(device) for key, value in batch.items()}


def _wants_stress(batch, use_stress: bool) -> bool:
    """Whether to derive stress for ``batch``: only when some frame in it has a stress label.

    The contract divides by the cell volume, so frames without a volume (molecules,
    cells with zero rows on non-periodic axes) get their non-periodic rows completed
    by an orthonormal basis first: their energy and forces do not depend on those
    rows, and their (unlabelled) stress stays finite, so no NaN reaches the gradients.
    """
    import torch

    from potentials.neighbors import complete_cell

    if not use_stress or not bool(batch["has_stress"].any()):
        return False
    singular = torch.linalg.det(batch["cell"]).abs() < 1e-9
    if bool(singular.any()):
        completed = complete_cell(batch["cell"], batch["pbc"])
        batch["cell"] = torch.where(singular.view(-1, 1, 1), completed, batch["cell"])
    return True


def _run_model(module, batch, compute_stress: bool):
    return module(batch["positions"], batch["atomic_numbers"], batch["cell"], batch["pbc"], batch["batch"],
                  True, compute_stress)


def _batch_loss(out, batch, weights, compute_stress: bool):
    """Weighted loss of one batch: w_E MSE(E/atom) + w_F MSE(F) + w_S MSE(stress)."""
    n_atoms = batch["n_atoms"].to(out["energy"].dtype)
    loss = weights["energy"] * (((out["energy"] - batch["energy"]) / n_atoms) ** 2).mean()
    loss = loss + weights["force"] * ((out["forces"] - batch["forces"]) ** 2).mean()
    if compute_stress:
        mask = batch["has_stress"]
        loss = loss + weights["stress"] * ((out["stress"][mask] - batch["stress"][mask]) ** 2).mean()
    return loss


# Order of the error sums accumulated by _error_sums.
_SUMS = ("frames", "e_se", "e_ae", "f_n", "f_se", "f_ae", "s_n", "s_se", "s_ae")


def _error_sums(module, dataset, indices, batch_size: int, dtype, device, use_stress: bool):
    """Sums of squared and absolute errors of ``module`` (evaluation mode) on ``indices``."""
    import torch

    sums = torch.zeros(len(_SUMS), dtype=torch.float64, device=device)
    if len(indices) == 0:
        return sums
    for batch in dataset.batches(indices, batch_size, dtype=dtype):
        batch = _to_device(batch, device)
        compute_stress = _wants_stress(batch, use_stress)
        out = _run_model(module, batch, compute_stress)
        e = ((out["energy"] - batch["energy"]) / batch["n_atoms"]).double()
        f = (out["forces"] - batch["forces"]).double()
        values = [len(e), (e ** 2).sum(), e.abs().sum(), f.numel(), (f ** 2).sum(), f.abs().sum(), 0.0, 0.0, 0.0]
        if compute_stress:
            s = (out["stress"] - batch["stress"])[batch["has_stress"]].double()
            values[6:] = [s.numel(), (s ** 2).sum(), s.abs().sum()]
        sums += torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    return sums


def _metrics(sums, weights) -> Dict[str, float]:
    """Loss and errors (meV/atom, meV/Å, meV/Å³) from summed errors."""
    s = dict(zip(_SUMS, [float(v) for v in sums]))
    if s["frames"] == 0:
        return {}
    loss = weights["energy"] * s["e_se"] / s["frames"] + weights["force"] * s["f_se"] / s["f_n"]
    if s["s_n"] > 0:
        loss += weights["stress"] * s["s_se"] / s["s_n"]
    return {
        "loss": loss,
        "energy_mae_meV_per_atom": 1000 * s["e_ae"] / s["frames"],
        "energy_rmse_meV_per_atom": 1000 * math.sqrt(s["e_se"] / s["frames"]),
        "force_mae_meV_per_A": 1000 * s["f_ae"] / s["f_n"],
        "force_rmse_meV_per_A": 1000 * math.sqrt(s["f_se"] / s["f_n"]),
        "stress_mae_meV_per_A3": 1000 * s["s_ae"] / s["s_n"] if s["s_n"] > 0 else float("nan"),
    }


# --- objectives: what a family trains on -------------------------------------------

# Objective name -> class; a family names its objective in the class attribute
# ``training_objective`` (default "potential"). Objectives shipped with mlmd load on first use.
OBJECTIVES: Dict[str, Any] = {}
_BUILTIN_OBJECTIVES = {"trajectory": "mlmd.trajectories"}


def register_objective(name: str):
    """Class decorator: make a training objective available to families that name it."""

    def decorate(cls):
        OBJECTIVES[name] = cls
        cls.name = name
        return cls

    return decorate


def objective_class(family: Optional[str]):
    """The objective class of model family ``family`` (the potential objective for unknown families)."""
    from importlib import import_module

    from potentials import FAMILIES

    name = getattr(FAMILIES.get(family), "training_objective", "potential") if family else "potential"
    if name not in OBJECTIVES and name in _BUILTIN_OBJECTIVES:
        import_module(_BUILTIN_OBJECTIVES[name])
    if name not in OBJECTIVES:
        raise MLMDError(f"model family {family!r} asks for training objective {name!r}, which is not registered; "
                        f"known: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


@register_objective("potential")
class PotentialObjective:
    """Energies, forces and stress of labelled frames (extended XYZ): the objective of every potential.

    An objective owns, for the trainer, the config schema of its family, the dataset
    and its split, the model's construction from the data, the batches, the loss of
    one batch and the validation metrics. ``loss`` returns ``(loss, weight)`` with
    ``weight`` the number of samples the loss averages (for the epoch mean);
    ``error_sums`` returns a float64 tensor that is summed over batches and ranks and
    turned into metrics (always with a ``"loss"`` key) by ``metrics``.
    """

    name = "potential"
    metric_columns = METRIC_COLUMNS
    curve = [("val_energy_mae_meV_per_atom", "energy MAE (meV/atom)"), ("val_force_mae_meV_per_A", "force MAE (meV/Å)")]
    resume_keys = (("data", "validation_fraction"), ("data", "test_fraction"), ("data", "seed"))

    def __init__(self, config: Dict[str, Any], log=print):
        self.config = config
        self.log = log
        training = config["training"]
        self.weights = {"energy": training["energy_weight"], "force": training["force_weight"],
                        "stress": training["stress_weight"]}

    @staticmethod
    def schema() -> Dict[str, Dict[str, tuple]]:
        return SCHEMA

    @staticmethod
    def finish_config(result: Dict[str, Any], base: Path, source: str) -> None:
        """Checks across keys, and paths made absolute (relative to ``base``)."""
        data = result["data"]
        if data["validation_fraction"] + data["test_fraction"] >= 1:
            raise MLMDError(f"{source}: data.validation_fraction + data.test_fraction must be below 1 "
                            f"(got {data['validation_fraction']} + {data['test_fraction']}); leave frames to train on")
        data["path"] = str((base / data["path"]).resolve())
        training = result["training"]
        if training["energy_weight"] == training["force_weight"] == training["stress_weight"] == 0:
            raise MLMDError(f"{source}: training.energy_weight, force_weight and stress_weight are all 0; "
                            "give at least one a positive weight")

    @staticmethod
    def check_data(config: Dict[str, Any]) -> None:
        data_path = Path(config["data"]["path"])
        if not data_path.is_file():
            raise InputFileError(f"data.path {data_path} does not exist; point data.path at a labelled extended XYZ "
                                 "file (make one with `mlmd generate`)")

    def load(self) -> None:
        """Read the data: sets ``dataset``, ``hash`` and ``split`` (train/validation/test indices)."""
        from .data import load_dataset

        data = self.config["data"]
        self.dataset = load_dataset(data["path"])
        self.hash = self.dataset.hash
        self.split = self.dataset.split(data["validation_fraction"], data["test_fraction"], data["seed"])
        if len(self.split.train) == 0:
            raise MLMDError(f"the training split of {data['path']} ({len(self.dataset)} frames) is empty; "
                            "lower data.validation_fraction and data.test_fraction or add frames")
        self.use_stress = self.weights["stress"] > 0 and any("stress" in lab for lab in self.dataset.labels)

    def build_model(self, model_section: Mapping[str, Any], indices: Sequence[int]):
        return model_from_dataset(model_section, self.dataset, indices)

    def attach(self, model) -> None:
        """Called with the (new or restored) model before training."""

    def batches(self, indices, batch_size: int, dtype, epoch: Optional[int] = None):
        """Batches of ``indices``; ``epoch`` is given for training batches (augmentation seeds)."""
        return self.dataset.batches(indices, batch_size, dtype=dtype)

    def loss(self, module, batch):
        compute_stress = _wants_stress(batch, self.use_stress)
        out = _run_model(module, batch, compute_stress)
        return _batch_loss(out, batch, self.weights, compute_stress), len(batch["energy"])

    def error_sums(self, module, indices, batch_size: int, dtype, device):
        return _error_sums(module, self.dataset, indices, batch_size, dtype, device, self.use_stress)

    def metrics(self, sums) -> Dict[str, float]:
        return _metrics(sums, self.weights)

    @staticmethod
    def describe(metrics: Mapping[str, float]) -> str:
        return (f"E {metrics['energy_mae_meV_per_atom']:.3g} meV/atom  "
                f"F {metrics['force_mae_meV_per_A']:.3g}/{metrics['force_rmse_meV_per_A']:.3g} meV/Å (MAE/RMSE)")


# --- files ---------------------------------------------------------------------

def _save(obj, path: Path) -> None:
    import torch

    from .io import atomic_path

    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


def load_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a training checkpoint (``checkpoint.pt`` or ``best.pt``), or raise a clear error.

    A folder stands for the ``checkpoint.pt`` inside it.
    """
    import torch

    from .io import require_file

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    path = require_file(path, "checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise InputFileError(f"checkpoint {path} could not be read ({type(exc).__name__}); it is corrupt or not "
                             "an mlmd training checkpoint; use the checkpoint.pt or best.pt `mlmd train` wrote") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InputFileError(f"{path} is not an mlmd training checkpoint; use the checkpoint.pt or best.pt "
                             "that `mlmd train` wrote (an exported model is already a model file)")
    if checkpoint.get("format_version", 0) > CHECKPOINT_VERSION:
        raise InputFileError(f"checkpoint {path} was written by a newer mlmd; upgrade mlmd to read it")
    return checkpoint


def _write_metrics(path: Path, history: List[Dict[str, Any]], columns: Sequence[str] = METRIC_COLUMNS) -> None:
    from .io import atomic_write

    with atomic_write(path, "w") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({key: ("" if isinstance(row.get(key), float) and math.isnan(row[key]) else row.get(key))
                             for key in columns})


def _plot_learning_curve(path: Path, history: List[Dict[str, Any]], best_epoch: int,
                         series: Sequence = PotentialObjective.curve) -> None:
    """Loss and validation errors against epoch, written atomically as PNG (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from .io import atomic_path

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, error_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [row["train_loss"] for row in history], "o-", ms=3, label="training")
    loss_axes.plot(epochs, [row["val_loss"] for row in history], "o-", ms=3, label="validation (EMA)")
    loss_axes.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    for column, label in series:
        error_axes.plot(epochs, [row[column] for row in history], "o-", ms=3, label=label)
    error_axes.set(xlabel="epoch", ylabel="validation error", yscale="log", title="validation errors (EMA)")
    for axes in (loss_axes, error_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch > 0:
            axes.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best (epoch {best_epoch})")
        axes.legend(fontsize=8)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")


# --- the trainer ----------------------------------------------------------------

@dataclass
class TrainResult:
    """What :func:`train` returns. ``model`` holds the last weights, ``ema_model`` their EMA
    (the weights export uses), both in memory; ``history`` has one row per epoch (all epochs,
    also those before a resume)."""

    directory: Path
    checkpoint: Path
    best_checkpoint: Path
    epoch: int
    best_epoch: int
    best_validation_loss: float
    stopped_early: bool
    history: List[Dict[str, Any]] = field(default_factory=list)
    test_metrics: Dict[str, float] = field(default_factory=dict)
    model: Any = None
    ema_model: Any = None


def train(config: Union[Mapping[str, Any], str, os.PathLike], resume: bool = False, epochs: Optional[int] = None,
          verbose: bool = True, progress: Optional[bool] = None) -> TrainResult:
    """Train the model a config describes (a dict or a JSON/TOML file); see the module docstring.

    ``resume`` continues from the output folder's ``checkpoint.pt``; ``epochs``
    overrides ``training.epochs`` (the total, counting epochs done before a
    resume). ``verbose`` prints one line per epoch; ``progress`` shows a
    progress bar per epoch (None: only on a terminal).
    """
    config = load_config(config)
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise MLMDError(f"--epochs must be a positive integer, got {epochs!r}")
        config["training"]["epochs"] = epochs
    objective_class(config["model"]["family"]).check_data(config)
    family_class(config["model"]["family"])
    info, device = _setup_distributed(config["training"]["device"])
    try:
        return _Trainer(config, info, device, verbose, progress).run(resume)
    finally:
        if info.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


class _Trainer:
    def __init__(self, config, info: _Distributed, device, verbose: bool, progress: Optional[bool]):
        self.config = config
        self.info = info
        self.device = device
        self.verbose = verbose and info.main
        self.progress = progress if info.main else False
        self.objective = objective_class(config["model"]["family"])(config, self.log)
        self.weights = getattr(self.objective, "weights", {})
        self.directory = Path(config["output"]["directory"])
        self.checkpoint_path = self.directory / CHECKPOINT_FILE
        self.best_path = self.directory / BEST_FILE

    def log(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)

    # -- setup --

    def _setup(self, resume: bool):
        import numpy as np
        import torch

        config, training = self.config, self.config["training"]
        self.dtype = getattr(torch, training["dtype"])
        if training["num_threads"] is not None:
            torch.set_num_threads(training["num_threads"])
        if resume and not self.checkpoint_path.is_file():
            raise MLMDError(f"--resume: there is no {self.checkpoint_path} to resume; "
                            "run without --resume to start training")
        if not resume and self.checkpoint_path.exists():
            raise MLMDError(f"{self.checkpoint_path} already exists; pass --resume to continue that run "
                            "or set output.directory to a new folder")
        self.objective.load()
        self.dataset = getattr(self.objective, "dataset", None)
        split = self.split = self.objective.split
        self.validation_indices = split.validation if len(split.validation) > 0 else split.train
        if len(split.validation) == 0:
            self.log("warning: the validation split is empty; the training frames stand in for it")

        checkpoint = load_checkpoint(self.checkpoint_path) if resume else None
        if checkpoint is not None:
            self._check_resumable(checkpoint)

        seed = training["seed"]
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            if checkpoint is None:
                model, self.model_config = self.objective.build_model(config["model"], split.train.tolist())
            else:
                self.model_config = checkpoint["model_config"]
                model = build_model(checkpoint["family"], self.model_config)
        finally:
            torch.set_default_dtype(previous)
        self.family = config["model"]["family"]
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.model.train()
        self.objective.attach(self.model)
        self.ema = EMA(self.model, training["ema_decay"])
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=training["lr"],
                                           weight_decay=training["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=training["lr_factor"], patience=training["lr_patience"],
            min_lr=training["min_lr"])
        self.epoch = 0
        self.best_metric = float("inf")
        self.best_epoch = 0
        self.bad_epochs = 0
        self.history: List[Dict[str, Any]] = []
        self.best_ema = None
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.ema.module.load_state_dict(checkpoint["ema"])
            self.ema.updates = int(checkpoint["ema_updates"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.epoch = int(checkpoint["epoch"])
            self.best_metric = float(checkpoint["best_metric"])
            self.best_epoch = int(checkpoint["best_epoch"])
            self.bad_epochs = int(checkpoint["bad_epochs"])
            self.history = list(checkpoint["history"])
            self.best_ema = checkpoint["best_ema"]
            _set_rng_state(checkpoint["rng"])
            self.log(f"resuming {self.checkpoint_path} after epoch {self.epoch}")

        self.ddp_model = self.model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=training["find_unused_parameters"])

    def _check_resumable(self, checkpoint) -> None:
        stored = checkpoint["config"]
        where = f"checkpoint {self.checkpoint_path}"
        if checkpoint.get("kind") == "best":
            raise MLMDError(f"{where} holds best weights only; resume from {CHECKPOINT_FILE}")
        if checkpoint["family"] != self.config["model"]["family"]:
            raise MLMDError(f"model.family is {self.config['model']['family']!r} but {where} trained "
                            f"{checkpoint['family']!r}; a resumed run keeps its model")
        for key, value in self.config["model"].items():
            if key != "family" and key in checkpoint["model_config"] and checkpoint["model_config"][key] != value:
                raise MLMDError(f"model.{key} is {value!r} but {where} has {checkpoint['model_config'][key]!r}; "
                                "a resumed run keeps its model: restore the value or start a new run")
        if checkpoint["data_hash"] != self.objective.hash:
            raise MLMDError(f"data.path {self.config['data']['path']} differs from the data {where} was trained on; "
                            "resume with the same dataset or start a new run")
        for section, key in (*self.objective.resume_keys, ("training", "dtype"), ("training", "seed")):
            if stored[section][key] != self.config[section][key]:
                raise MLMDError(f"{section}.{key} is {self.config[section][key]!r} but {where} used "
                                f"{stored[section][key]!r}; restore it to resume")

    # -- epochs --

    def _shard(self, indices, shuffle_epoch: Optional[int]):
        """This rank's share of ``indices``; shuffled by (seed, epoch) and padded to equal shares when training."""
        import numpy as np

        indices = np.asarray(indices)
        if shuffle_epoch is not None:
            indices = np.random.default_rng([self.config["training"]["seed"], shuffle_epoch]).permutation(indices)
            remainder = len(indices) % self.info.world_size
            if remainder:
                indices = np.concatenate([indices, indices[:self.info.world_size - remainder]])
        return indices[self.info.rank::self.info.world_size].tolist()

    def _fit_linear(self) -> float:
        """Closed-form fit of a linear family on all training frames; the EMA copies it. Returns the training loss."""
        import torch

        batches = self.dataset.batches(self.split.train, self.config["data"]["batch_size"], dtype=torch.float64)
        stats = self.model.fit_linear(batches, energy_weight=self.weights["energy"], force_weight=self.weights["force"])
        self.log(f"closed-form fit of {self.family} on {len(self.split.train)} frames in {stats['seconds']:.2f} s")
        self.ema.module.load_state_dict(self.model.state_dict())
        return self._evaluate(self.ema.module, self.split.train)["loss"]

    def _train_epoch(self, epoch: int) -> float:
        import torch
        from tqdm.auto import tqdm

        if hasattr(self.model, "fit_linear"):
            return self._fit_linear()
        training = self.config["training"]
        batch_size = self.config["data"]["batch_size"]
        indices = self._shard(self.split.train, epoch)
        n_batches = math.ceil(len(indices) / batch_size)
        self.ddp_model.train()
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{training['epochs']}", unit="batch", leave=False,
                   disable=None if self.progress is None else not self.progress, file=sys.stderr)
        try:
            for batch in self.objective.batches(indices, batch_size, self.dtype, epoch=epoch):
                batch = _to_device(batch, self.device)
                self.optimizer.zero_grad(set_to_none=True)
                loss, frames = self.objective.loss(self.ddp_model, batch)
                loss.backward()
                if training["grad_clip_norm"] is not None:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), training["grad_clip_norm"])
                self.optimizer.step()
                self.ema.update(self.model)
                totals += torch.stack([loss.detach().double() * frames,
                                       torch.tensor(float(frames), dtype=torch.float64, device=self.device)])
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3g}")
        finally:
            bar.close()
        _all_reduce(totals, self.info)
        return float(totals[0] / totals[1])

    def _evaluate(self, module, indices) -> Dict[str, float]:
        batch_size = self.config["data"]["validation_batch_size"] or self.config["data"]["batch_size"]
        sums = self.objective.error_sums(module, self._shard(indices, None), batch_size, self.dtype, self.device)
        return self.objective.metrics(_all_reduce(sums, self.info))

    def _checkpoint(self) -> Dict[str, Any]:
        from . import __version__

        return {
            "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "kind": "training",
            "mlmd_version": __version__, "family": self.family, "model_config": self.model_config,
            "dtype": self.config["training"]["dtype"], "config": self.config, "data_hash": self.objective.hash,
            "model": self.model.state_dict(), "ema": self.ema.state_dict(), "ema_updates": self.ema.updates,
            "best_ema": self.best_ema, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": _rng_state(), "epoch": self.epoch,
            "best_metric": self.best_metric, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "history": self.history,
        }

    def _best_checkpoint(self, row) -> Dict[str, Any]:
        from . import __version__

        return {
            "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "kind": "best",
            "mlmd_version": __version__, "family": self.family, "model_config": self.model_config,
            "dtype": self.config["training"]["dtype"], "config": self.config, "data_hash": self.objective.hash,
            "ema": self.best_ema, "epoch": self.epoch, "best_metric": self.best_metric, "metrics": row,
        }

    def _out_of_time(self, run_started: float) -> bool:
        """Whether this invocation's wall-clock budget is spent; every rank takes rank 0's answer."""
        import torch

        budget = self.config["training"]["max_time_min"]
        if budget is None:
            return False
        spent = self.info.main and time.perf_counter() - run_started > 60.0 * budget
        flag = torch.tensor([float(spent)], device=self.device)
        if self.info.enabled:
            _all_reduce(flag, self.info)
        return bool(flag.item() > 0)

    def run(self, resume: bool) -> TrainResult:
        import torch

        self._setup(resume)
        if self.info.main:
            self.directory.mkdir(parents=True, exist_ok=True)
        training = self.config["training"]
        patience = training["early_stopping_patience"]
        stopped_early = patience is not None and self.bad_epochs >= patience
        out_of_time = False
        run_started = time.perf_counter()
        if self.info.main and not resume:
            self.log(f"training {self.family} ({sum(p.numel() for p in self.model.parameters())} parameters) on "
                     f"{len(self.split.train)} frames, validating on {len(self.split.validation)}, "
                     f"{self.info.world_size} process(es) on {self.device}, {training['dtype']}")
        linear = hasattr(self.model, "fit_linear")  # one closed-form fit, no gradient epochs
        while self.epoch < training["epochs"] and not stopped_early and not out_of_time and not (
                linear and self.epoch >= 1):
            epoch = self.epoch + 1
            started = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            validation = self._evaluate(self.ema.module, self.validation_indices)
            if not (math.isfinite(train_loss) and math.isfinite(validation["loss"])):
                kept = f"the last good state is {self.checkpoint_path}" if self.epoch > 0 else "no checkpoint was kept"
                raise MLMDError(f"training diverged in epoch {epoch} (loss {train_loss}, validation "
                                f"{validation['loss']}); {kept}; lower training.lr or grad_clip_norm")
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step(validation["loss"])
            improved = validation["loss"] < self.best_metric
            if improved:
                self.best_metric, self.best_epoch, self.bad_epochs = validation["loss"], epoch, 0
                self.best_ema = {k: v.detach().clone() for k, v in self.ema.state_dict().items()}
            else:
                self.bad_epochs += 1
            self.epoch = epoch
            row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": validation["loss"],
                   **{f"val_{k}": v for k, v in validation.items() if k != "loss"},
                   "time_s": round(time.perf_counter() - started, 3)}
            self.history.append(row)
            stopped_early = patience is not None and self.bad_epochs >= patience
            out_of_time = self._out_of_time(run_started)
            if self.info.main:
                _save(self._checkpoint(), self.checkpoint_path)
                if improved:
                    _save(self._best_checkpoint(row), self.best_path)
                _write_metrics(self.directory / METRICS_FILE, self.history, self.objective.metric_columns)
                if self.config["output"]["learning_curve"]:
                    _plot_learning_curve(self.directory / CURVE_FILE, self.history, self.best_epoch,
                                         self.objective.curve)
            self.log(f"epoch {epoch:4d}/{training['epochs']}  lr {lr:.2e}  train {train_loss:.4g}  "
                     f"val {validation['loss']:.4g}  {self.objective.describe(validation)}{'  *' if improved else ''}")
            _barrier(self.info)
        if stopped_early:
            self.log(f"stopped early: no improvement for {self.bad_epochs} epochs")
        elif out_of_time:
            self.log(f"stopped after epoch {self.epoch}: the {training['max_time_min']} min budget is spent; "
                     "--resume continues")

        test_metrics: Dict[str, float] = {}
        if len(self.split.test) > 0 and self.best_ema is not None:
            best = copy.deepcopy(self.ema.module)
            best.load_state_dict(self.best_ema)
            test_metrics = self._evaluate(best, self.split.test)
            self.log(f"test (best EMA weights, epoch {self.best_epoch}): {self.objective.describe(test_metrics)}")
        if self.info.main:
            from .io import atomic_write

            summary = {"epoch": self.epoch, "best_epoch": self.best_epoch, "best_validation_loss": self.best_metric,
                       "stopped_early": stopped_early, "test": test_metrics, "data_hash": self.objective.hash,
                       "family": self.family, "n_train": len(self.split.train),
                       "n_validation": len(self.split.validation), "n_test": len(self.split.test)}
            with atomic_write(self.directory / SUMMARY_FILE) as stream:
                json.dump(summary, stream, indent=1, default=lambda v: None)
        _barrier(self.info)
        return TrainResult(
            directory=self.directory, checkpoint=self.checkpoint_path, best_checkpoint=self.best_path,
            epoch=self.epoch, best_epoch=self.best_epoch, best_validation_loss=self.best_metric,
            stopped_early=stopped_early, history=self.history, test_metrics=test_metrics,
            model=self.model, ema_model=self.ema.module,
        )


# --- export -----------------------------------------------------------------------

def export_checkpoint(checkpoint: Union[str, os.PathLike], output: Union[str, os.PathLike], best: bool = False,
                      **metadata: Any):
    """Write the EMA weights of a training checkpoint (``best``: those of the best
    validation epoch) as an exported model file; returns its path. ``metadata``
    goes into the model file's metadata beside the standard keys."""
    import torch

    from .model import export_model

    data = load_checkpoint(checkpoint)
    if best and data.get("kind") != "best":
        weights = data.get("best_ema")
        if weights is None:
            raise MLMDError(f"checkpoint {checkpoint} has no best weights yet (no epoch finished); "
                            "export without --best")
        epoch = data["best_epoch"]
    else:
        weights, epoch = data["ema"], data["epoch"]
    dtype = getattr(torch, data["dtype"])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        module = build_model(data["family"], data["model_config"])
    finally:
        torch.set_default_dtype(previous)
    module = module.to(dtype)
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise MLMDError(f"the weights in {checkpoint} do not fit model family {data['family']!r} as installed "
                        f"({str(exc).splitlines()[0]}); use the mlmd version that wrote it") from exc
    module.eval()
    training = {"epoch": int(epoch), "weights": "best EMA" if (best or data.get("kind") == "best") else "EMA"}
    return export_model(module, output, training_data_hash=data["data_hash"], training=training, **metadata)


# --- command line --------------------------------------------------------------------

def _add_train_arguments(parser) -> None:
    parser.add_argument("config", help="training config (.json or .toml); see `python -m pydoc mlmd.train`")
    parser.add_argument("--resume", action="store_true",
                        help="continue from checkpoint.pt in the output directory, exactly where it stopped")
    parser.add_argument("--epochs", type=int, help="total number of epochs (overrides training.epochs)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines and no progress bar")


def _run_train(args) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise MLMDError(f"--epochs must be at least 1, got {args.epochs}")
    result = train(args.config, resume=args.resume, epochs=args.epochs, verbose=not args.quiet,
                   progress=False if args.quiet else None)
    if not args.quiet and int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {result.checkpoint}\nbest weights (epoch {result.best_epoch}): {result.best_checkpoint}")
    return 0


def _add_export_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="checkpoint.pt (or best.pt, or the output folder) of `mlmd train`")
    parser.add_argument("-o", "--output", required=True, help="model file to write, e.g. model.pt")
    parser.add_argument("--best", action="store_true",
                        help="export the EMA weights of the best validation epoch instead of the last")


def _run_export(args) -> int:
    path = export_checkpoint(args.checkpoint, args.output, best=args.best)
    print(f"wrote {path}")
    return 0


COMMAND = Command(
    name="train",
    help="train a model family on a labelled dataset from a JSON/TOML config",
    add_arguments=_add_train_arguments,
    run=_run_train,
)

EXPORT_COMMAND = Command(
    name="export",
    help="turn a training checkpoint into a model file every engine loads",
    add_arguments=_add_export_arguments,
    run=_run_export,
)
