"""The ``ase.plugins`` entry point: ASE's plugin record of the calculator named ``mlmd``.

How ASE finds a calculator by name (read from ASE 3.29, the version mlmd is
tested with):

- ``ase.calculators.calculator.get_calculator_class(name)``, ASE's public
  lookup, knows a few names written into it, the classes registered in the
  running process with ``register_calculator_class`` (its
  ``external_calculators`` dict; ``import mlmd`` registers ``mlmd`` through
  :func:`mlmd.ase.calculator.register_with_ase`), and otherwise imports the
  module ``ase.calculators.<name>``. It reads no entry points. In a fresh
  process that import is answered by :mod:`mlmd.ase.lookup`, whose ``.pth``
  line mlmd installs, so the bare call works before anything imported mlmd.
- ASE's plugin collection (``ase._4.plugins.plugins``, used by ``ase info
  --plugins``) reads the ``ase.plugins`` entry-point group: it imports this
  module and collects ``__ase_plugins__``. The collection lives in ASE's
  private, experimental ``ase._4`` namespace, so it is imported under a guard:
  on an ASE without it, ``__ase_plugins__`` is empty, :data:`UNAVAILABLE` says
  why and a warning is issued; the name lookup is unaffected.
"""

import warnings

from .calculator import ASE_NAME  # importing the calculator registers the name with ASE

CITATION = "mlmd: learned interatomic potentials in the MD engines people already use"

#: Why ASE's plugin record could not be built (None when it was).
UNAVAILABLE = None

try:
    from ase._4.plugins.plugin import CalculatorPlugin
except ImportError as exc:  # an ASE without the experimental plugin namespace
    UNAVAILABLE = (f"this ASE has no ase._4.plugins.plugin.CalculatorPlugin ({exc}); mlmd's calculator is "
                   f"found by name only after `import mlmd`")
    warnings.warn(UNAVAILABLE, stacklevel=2)
    __ase_plugins__ = frozenset()
else:
    __ase_plugins__ = frozenset({
        CalculatorPlugin(ASE_NAME, implementation="mlmd.ase.calculator.MLMDCalculator", citation=CITATION)
    })
