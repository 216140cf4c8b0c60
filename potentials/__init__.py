"""Learned interatomic potentials and their building blocks (torch and e3nn only).

``FAMILIES`` maps a model family name (as a training config names it) to its
class. A family registers itself with :func:`register_family`; families from
other distributions plug in through the ``mlmd.families`` entry-point group,
so nothing else has to change to add one.

Layout: one module per family (``equivariant``, ``facet``, ``spline``,
``forecaster``, ``transformer``); the model contract and the species/cutoff/dtype base in
``base``; neighbour lists in ``neighbors``; the building blocks that several
families share in ``blocks`` (no family imports another); the conformance
suites, importable by families from other distributions, in ``testing``.
"""

from importlib import import_module
from importlib.metadata import entry_points
from typing import Callable, Dict, Type

import torch

FAMILIES: Dict[str, Type[torch.nn.Module]] = {}

# Families shipped with mlmd; importing the module registers the family.
_BUILTIN_MODULES = ("potentials.equivariant", "potentials.facet", "potentials.spline", "potentials.forecaster",
                    "potentials.transformer")


def register_family(name: str) -> Callable[[Type[torch.nn.Module]], Type[torch.nn.Module]]:
    """Class decorator: make a model family available as ``FAMILIES[name]``."""

    def decorate(cls: Type[torch.nn.Module]) -> Type[torch.nn.Module]:
        if name in FAMILIES and FAMILIES[name] is not cls:
            raise ValueError(f"model family {name!r} is registered twice")
        FAMILIES[name] = cls
        cls.family = name
        return cls

    return decorate


def _load_families() -> None:
    for module in _BUILTIN_MODULES:
        import_module(module)
    for entry in entry_points(group="mlmd.families"):
        if entry.name not in FAMILIES:
            register_family(entry.name)(entry.load())


_load_families()
