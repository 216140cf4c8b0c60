"""Building a model family's module for training: from the data, from a stored config, in a dtype.

The model is ``FAMILIES[model.family]``, built with its ``from_config(kwargs)``
(see :class:`potentials.base.TrainableFamily`). The trainer fills in the
constructor arguments that come from the data, each only when the family's
constructor has a parameter of that name and the config does not set it:

- ``species``: the elements of the dataset (sorted atomic numbers)
- ``avg_num_neighbors``: mean neighbour count within ``cutoff`` (training frames)
- ``atomic_energies_ref``: least-squares per-element energies, in ``species`` order
- ``scale``: the RMS of the training forces (eV/Å)
- ``shift``: the mean per-atom energy left after the reference energies (eV)

Another objective passes its own statistics and names (the forecaster's come
from the trajectories). The family's ``config()`` is stored in the checkpoint, so
that ``mlmd export`` and ``--resume`` rebuild the same model.
"""

import inspect
import json
from contextlib import contextmanager
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

from ..errors import MLMDError
from .config import suggest

# Constructor arguments the trainer derives from a labelled dataset (see the module docstring).
DATA_DERIVED = ("species", "avg_num_neighbors", "atomic_energies_ref", "scale", "shift")


def family_class(name: str):
    """The class registered as model family ``name``, or a clear error."""
    from potentials import FAMILIES
    from potentials.base import TrainableFamily

    if name not in FAMILIES:
        known = ", ".join(sorted(FAMILIES)) or "none registered"
        raise MLMDError(f"unknown model family {name!r}{suggest(name, FAMILIES)}; "
                        f"set model.family to one of: {known}")
    cls = FAMILIES[name]
    if not issubclass(cls, TrainableFamily):
        raise MLMDError(f"model family {name!r} cannot be trained: it defines no config() and from_config() "
                        "(see potentials.base.TrainableFamily)")
    return cls


def constructor_parameters(cls) -> Tuple[list, bool, list, dict]:
    """(names, accepts **kwargs, required names, defaults) of ``cls``'s constructor."""
    signature = inspect.signature(cls.__init__)
    parameters = [p for p in signature.parameters.values() if p.name != "self"]
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    var_keyword = any(p.kind == p.VAR_KEYWORD for p in parameters)
    required = [p.name for p in parameters
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty]
    defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
    return names, var_keyword, required, defaults


def build_model(family: str, kwargs: Mapping[str, Any]):
    """Instantiate family ``family`` from its constructor arguments (through ``from_config``)."""
    cls = family_class(family)
    try:
        return cls.from_config(dict(kwargs))
    except (TypeError, ValueError, KeyError) as exc:
        raise MLMDError(f"model family {family!r} rejected its hyperparameters: {exc}; "
                        "fix the [model] section") from exc


@contextmanager
def default_dtype(dtype):
    """Within the block, torch's default dtype is ``dtype`` (a model is built in its training dtype)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def model_config_of(module) -> Dict[str, Any]:
    """The constructor arguments that rebuild ``module`` (its ``config()``), as plain JSON values."""
    return json.loads(json.dumps(module.config()))


def dataset_statistics(dataset, indices: Sequence[int], cutoff: float) -> Dict[str, Any]:
    """Everything a family may take from a labelled dataset (see the module docstring)."""
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


def model_from_statistics(model_section: Mapping[str, Any], statistics: Callable[[float], Dict[str, Any]],
                          derived: Sequence[str]):
    """Build the configured family from ``statistics(cutoff) -> dict`` of the training data.

    Every name in ``derived`` that the constructor takes and the model section does not
    set is filled from the statistics (see the module docstring).
    Returns ``(module, model_config)``.
    """
    family = model_section["family"]
    cls = family_class(family)
    given = {k: v for k, v in model_section.items() if k != "family"}
    names, var_keyword, required, defaults = constructor_parameters(cls)
    if not var_keyword:
        for key in given:
            if key not in names:
                raise MLMDError(f"model.{key} is not a hyperparameter of family {family!r}"
                                f"{suggest(key, names)}; its hyperparameters are: {', '.join(names)}")
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
    kwargs = dict(given)
    for key in derived:
        if key in names and key not in kwargs:
            kwargs[key] = stats[key]
    absent = [name for name in required if name not in kwargs]
    if absent:
        raise MLMDError(f"model.{absent[0]} is required by family {family!r}; add it to the [model] section")
    module = build_model(family, kwargs)
    return module, model_config_of(module)
