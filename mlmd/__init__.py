"""mlmd: learned interatomic potentials and trajectory forecasters in the MD engines people already use.

Public interface: :func:`load_model`, :func:`pretrained`, :class:`MLMDCalculator` (ASE, also
found by ASE under the name ``mlmd``), :class:`MLMDError`.
"""

__version__ = "0.1.0"

from .ase import MLMDCalculator  # noqa: E402  (registers the name "mlmd" with ASE)
from .errors import MLMDError  # noqa: E402

# Modules that import torch load on first use, so `import mlmd` and `mlmd --help` stay fast.
_LAZY = {"load_model": ("model", "load_model"), "Model": ("model", "Model"), "export_model": ("model", "export_model"),
         "pretrained": ("model", "pretrained")}


# Submodules reachable as attributes (``mlmd.md.run``) without an explicit import.
_SUBMODULES = ("md", "saddle", "openmm", "demo", "train", "training", "data", "generate", "forecast", "dynamics",
               "trajectories")


def __getattr__(name):
    from importlib import import_module

    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(import_module(f".{module}", __name__), attribute)
    raise AttributeError(f"module 'mlmd' has no attribute {name!r}")


__all__ = ["MLMDCalculator", "MLMDError", "Model", "export_model", "load_model", "pretrained", "__version__"]
