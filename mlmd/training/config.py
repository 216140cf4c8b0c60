"""The training config: its file format, the keys shared by every objective, reading and validation.

A JSON (``.json``) or TOML (``.toml``) file, or the same nested dict from
Python. Relative paths in a file are relative to the file's folder; in a dict,
to the current directory. Every key but ``data.path`` and ``model.family``
has a default. The keys of ``[data]`` and ``[training]`` belong to the family's
objective (:mod:`mlmd.training.objectives`); the shared ones are
:data:`TRAINING_SCHEMA`, :data:`BATCH_SCHEMA` and :data:`OUTPUT_SCHEMA`::

    [data]
    path = "cu.xyz"              # extended XYZ with energy, forces (stress optional)
    validation_fraction = 0.1
    test_fraction = 0.1
    seed = 0                     # seed of the train/validation/test split
    batch_size = 8
    validation_batch_size = 32   # default: batch_size

    [model]
    family = "equivariant"       # any name in potentials.FAMILIES
    cutoff = 5.0                 # every other key goes to the family's constructor
    channels = 32

    [training]
    epochs = 100                 # total, counting epochs before a resume
    lr = 0.001
    weight_decay = 0.0
    energy_weight = 1.0          # loss = w_E MSE(E/atom) + w_F MSE(F) + w_S MSE(stress)
    force_weight = 10.0
    stress_weight = 1.0
    ema_decay = 0.99
    lr_schedule = "plateau"      # lr of each step = w(e) s(p) at progress p = min(1, max(e/epochs, t/budget)),
                                 # e epochs done (fractional, per step), t time trained (mlmd.training.schedules):
                                 # "plateau": s *= lr_factor after lr_patience epochs without a better validation
                                 # loss; "cosine": s = min_lr + (lr0 - min_lr)(1 + cos(pi p))/2;
                                 # "exponential": s = lr0 (min_lr/lr0)^p; "constant": s = lr0
    lr_factor = 0.5              # plateau only
    lr_patience = 10             # plateau only
    min_lr = 0.0                 # floor of plateau, end point of cosine and exponential (never scaled)
    warmup_epochs = 0            # linear warm-up w(e) = f0 + (1 - f0) min(1, e/warmup_epochs); 0: w = 1
    warmup_start_factor = 0.1    # f0: the first step's lr is f0 lr0
    lr_scaling = "none"          # lr0 = lr (B/B_ref)^a with a = 0 ("none"), 1/2 ("sqrt"), 1 ("linear"),
    reference_batch_size = 8     # B_ref; B = data.batch_size * processes
    stage_two_fraction = 0.8     # default none (one stage); steps at progress p >= 0.8 use the stage_two_* loss
                                 # weights (MACE's second stage) and best.pt holds the best stage-two weights
    stage_two_lr = 0.0001        # default none (the schedule goes on); else the constant lr of stage two
    stage_two_energy_weight = 100.0  # stage-two w_E; the default none of the next two keeps the stage-one weight
    stage_two_force_weight = 10.0
    stage_two_stress_weight = 1.0
    early_stopping_patience = 30
    max_time_min = 60            # time budget of this invocation, checked after each batch
    budget_clock = "wall"        # or "cpu": the process's CPU time (user + system), fair on a shared machine
    snapshot_minutes = [5, 20]   # default none; when the budget clock passes each mark (minutes trained, all
                                 # invocations) the epoch ends there, is validated, and the best EMA weights so
                                 # far go to snapshot-5min.pt, snapshot-20min.pt (what best.pt would hold had
                                 # the budget been that mark; `mlmd export` reads them)
    num_threads = 1              # torch CPU threads; 1 wins whenever other work shares the cores
    grad_clip_norm = 10.0
    seed = 0
    dtype = "float64"
    device = "auto"
    find_unused_parameters = false   # DDP, for families with parameters some batches do not use

    [output]
    directory = "training"
    learning_curve = true

The ``trajectory`` objective (family ``forecaster``) reads pairs of reference MD
frames ``interval_steps`` apart instead; its ``[data]`` and ``[training]``::

    [data]
    path = "ethanol-trajectories"   # folder of run-*.h5 (mlmd generate --trajectory), glob or list
    interval_steps = 20              # reference MD steps per forecaster call
    pair_stride = 10                 # every 10th recorded frame starts a pair
    validation_runs = 1              # whole runs: the last test_runs test, the validation_runs before validate
    test_runs = 0
    batch_size = 8

    [training]                       # every key above but the E/F/S weights (stage two sets the lr only), plus
    displacement_weight = 1.0        # L = w_d MSE(x/s_d) + w_v MSE(v/s_v) per step (normalised targets)
    velocity_weight = 1.0
    rollout_steps = 1                # k > 1: unroll k calls on predictions, backpropagate through all
    rollout_weight = 1.0             # weight of steps 2..k
    time_reversal = false            # train also on reversed pairs (x', -v') -> (x, -v)

The ``symmetry`` objective (family ``transformer``, whose rotational symmetry is learned) takes every key
of the ``potential`` objective plus::

    [training]
    symmetry = "learned"             # "plain", "augment" (every batch randomly rotated) or "learned" (TransIP)
    contrastive_weight = 0.1         # learned: L = (L_EF(x) + L_EF(R x)) / 2 + w_c InfoNCE
    contrastive_temperature = 0.1
    reflections = true               # random rotations from O(3) (false: SO(3))
    equivariance_rotations = 4       # rotations per validation frame in the rotation error measured at the end

A schema maps ``section -> key -> (default, check, example)``: ``check(value)``
returns an error text or None, and the example goes into the error message.
"""

import difflib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

from ..errors import InputFileError, MLMDError
from .objectives import objective_class
from .schedules import LR_SCALING, SCHEDULES

# The default of a key that has none: the config must set it.
REQUIRED = object()

Check = Callable[[Any], Optional[str]]


def number(minimum=None, maximum=None, strict_min=False, strict_max=False, integer=False,
           optional=False) -> Check:
    """A check for a numeric value within bounds (``strict_*``: bound excluded; ``optional``: None allowed)."""

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


def string(choices=None) -> Check:
    """A check for a non-empty string, one of ``choices`` when given."""

    def check(value):
        if not isinstance(value, str) or not value:
            return f"must be a non-empty string, got {value!r}"
        if choices is not None and value not in choices:
            return f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
        return None

    return check


def minutes_list(value) -> Optional[str]:
    """Check of ``training.snapshot_minutes``: null or a list of distinct positive numbers (minutes)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list of minutes or null, got {value!r}"
    for item in value:
        problem = number(0, strict_min=True)(item)
        if problem:
            return f"entries {problem}"
    if len(set(value)) != len(value):
        return f"must not repeat a mark, got {value!r}"
    return None


def device(value) -> Optional[str]:
    """Check of ``training.device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not isinstance(value, str):
        return f"must be a string such as 'auto', 'cpu', 'cuda' or 'cuda:1', got {value!r}"
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return None
    return f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}"


def boolean(value) -> Optional[str]:
    """Check of a true/false key."""
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


# [data] keys of every objective.
BATCH_SCHEMA: Dict[str, tuple] = {
    "batch_size": (8, number(1, integer=True), "8"),
    "validation_batch_size": (None, number(1, integer=True, optional=True), "32"),
}

# [training] keys of every objective (optimizer, EMA, schedule, stopping, resources).
TRAINING_SCHEMA: Dict[str, tuple] = {
    "epochs": (100, number(1, integer=True), "100"),
    "lr": (1e-3, number(0, strict_min=True), "0.001"),
    "weight_decay": (0.0, number(0), "0.0"),
    "ema_decay": (0.99, number(0, 1, strict_max=True), "0.99 (0 turns the average off)"),
    "lr_schedule": ("plateau", lambda value: string(tuple(SCHEDULES))(value), '"cosine"'),
    "lr_factor": (0.5, number(0, 1, strict_min=True, strict_max=True), "0.5"),
    "lr_patience": (10, number(0, integer=True), "10"),
    "min_lr": (0.0, number(0), "1e-6"),
    "warmup_epochs": (0, number(0), "2 (0: no warm-up)"),
    "warmup_start_factor": (0.1, number(0, 1), "0.1"),
    "lr_scaling": ("none", string(tuple(LR_SCALING)), '"sqrt"'),
    "reference_batch_size": (8, number(1, integer=True), "8"),
    "stage_two_fraction": (None, number(0, 1, optional=True), "0.8 (null: no stage two)"),
    "stage_two_lr": (None, number(0, strict_min=True, optional=True), "1e-4 (null: the schedule goes on)"),
    "early_stopping_patience": (30, number(1, integer=True, optional=True), "30 (null turns it off)"),
    "num_threads": (None, number(1, integer=True, optional=True), "1 (null: torch's default)"),
    "max_time_min": (None, number(0, strict_min=True, optional=True), "60 (null: no limit)"),
    "budget_clock": ("wall", string(("wall", "cpu")), '"wall" ("cpu": this process\'s CPU time)'),
    "snapshot_minutes": (None, minutes_list, "[5, 20, 60] (null: no snapshots)"),
    "grad_clip_norm": (10.0, number(0, strict_min=True, optional=True), "10.0 (null turns it off)"),
    "seed": (0, number(0, integer=True), "0"),
    "dtype": ("float64", string(("float32", "float64")), '"float64"'),
    "device": ("auto", device, '"auto"'),
    "find_unused_parameters": (False, boolean, "false"),
}

OUTPUT_SCHEMA: Dict[str, tuple] = {
    "directory": ("training", string(), '"training"'),
    "learning_curve": (True, boolean, "true"),
}

SECTIONS = ("data", "model", "training", "output")


def suggest(name: str, options) -> str:
    """`` (did you mean 'x'?)`` for the option closest to a misspelt ``name``, or an empty string."""
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_config(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a JSON or TOML config file into a nested dict (not yet validated)."""
    from ..io import require_file

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


def _section_values(given: Any, keys: Mapping[str, tuple], section: str, source: str) -> Dict[str, Any]:
    """The checked values of one section, defaults filled in."""
    if not isinstance(given, Mapping):
        raise MLMDError(f"{source}: section {section!r} must be a table of keys, got {given!r}")
    for key in given:
        if key not in keys:
            raise MLMDError(f"{source}: unknown key {section}.{key}{suggest(key, keys)}; "
                            f"the keys of [{section}] are {', '.join(keys)}")
    values = {}
    for key, (default, check, example) in keys.items():
        if key not in given:
            if default is REQUIRED:
                raise MLMDError(f"{source}: {section}.{key} is missing; add it, e.g. {key} = {example}")
            values[key] = default
            continue
        problem = check(given[key])
        if problem:
            raise MLMDError(f"{source}: {section}.{key} {problem}; set e.g. {key} = {example}")
        values[key] = given[key]
    return values


def check_schedule(training: Mapping[str, Any], source: str) -> None:
    """Checks across the schedule's keys: a decay needs an end point below its start."""
    name, low = training["lr_schedule"], training["min_lr"]
    if name == "exponential" and low <= 0:
        raise MLMDError(f"{source}: training.min_lr must be > 0 for lr_schedule = \"exponential\" (it decays to "
                        f"min_lr), got {low!r}; set e.g. min_lr = 1e-5")
    if name in ("cosine", "exponential") and low > training["lr"]:
        raise MLMDError(f"{source}: training.min_lr ({low!r}) is above training.lr ({training['lr']!r}); "
                        f"lr_schedule = {name!r} decays from lr to min_lr: lower min_lr")


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
    for section in config:
        if section not in SECTIONS:
            raise MLMDError(f"{source}: unknown section {section!r}{suggest(section, SECTIONS)}; "
                            f"the sections are {', '.join(SECTIONS)}")
    result: Dict[str, Any] = {section: _section_values(config.get(section, {}), keys, section, source)
                              for section, keys in objective.schema().items()}
    objective.finish_config(result, base, source)
    check_schedule(result["training"], source)
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
