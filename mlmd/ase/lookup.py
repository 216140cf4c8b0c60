"""ASE's name lookup in a fresh process: the module ``ase.calculators.mlmd``, served on demand.

``ase.calculators.calculator.get_calculator_class(name)`` (ASE 3.29) returns a
class registered in the running process (``register_calculator_class``, which
``import mlmd`` does) and otherwise imports the module ``ase.calculators.<name>``
and takes its class ``name.title()``, here ``Mlmd``. No distribution can add a
module to the regular package ``ase.calculators``, so mlmd installs, at the root
of site-packages, ``mlmd_ase_lookup.pth`` (``setup.py`` puts it into wheels and
editable installs). Its one line appends a meta-path finder to ``sys.meta_path``
at interpreter start; the finder imports nothing (no torch, no mlmd) until the
import system asks it for exactly ``ase.calculators.mlmd``, after ASE's own
finders found no such file. Then it calls :func:`find_spec` below, whose module
exposes ``Mlmd`` and ``MLMDCalculator`` (both :class:`~mlmd.ase.calculator.MLMDCalculator`)
and, by importing mlmd, registers the name for later lookups too.

So in a fresh process ``get_calculator_class("mlmd")`` and ``ase run mlmd
STRUCTURE -p model=MODEL.pt`` work. Python started with ``-S`` (no site
module) reads no ``.pth`` file; there, ``import mlmd`` first.
"""

import importlib.abc
import importlib.machinery
import importlib.util
from typing import Optional

#: The module ASE imports for the calculator name ``mlmd``.
MODULE = "ase.calculators.mlmd"

#: The class name ASE looks up in it (``"mlmd".title()``).
CLASS_NAME = "Mlmd"


class CalculatorModuleLoader(importlib.abc.Loader):
    """Fills the module ``ase.calculators.mlmd`` with the calculator class under ASE's and mlmd's names."""

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module) -> None:
        from .calculator import MLMDCalculator

        module.__doc__ = "mlmd's ASE calculator under the name ASE looks up (served by mlmd.ase.lookup)."
        setattr(module, CLASS_NAME, MLMDCalculator)
        module.MLMDCalculator = MLMDCalculator


def find_spec(name: str) -> Optional[importlib.machinery.ModuleSpec]:
    """The spec of ``ase.calculators.mlmd`` (None for every other name); called by the ``.pth`` finder."""
    if name != MODULE:
        return None
    return importlib.util.spec_from_loader(name, CalculatorModuleLoader())
