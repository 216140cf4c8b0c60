"""mlmd: learned interatomic potentials and trajectory forecasters in the MD engines people already use.

Public interface: :func:`load_model`, :func:`pretrained`, :class:`MLMDCalculator` (ASE, also
found by ASE under the name ``mlmd``), :class:`MLMDError`.
"""

__version__ = "0.1.0"

import warnings

# mlmd's model file is a TorchScript archive (see DESIGN.md). torch >= 2.10 warns that TorchScript is
# deprecated at every script, save and load call, which would put a warning in front of every command's
# output that a user cannot act on. Only these exact messages are filtered; everything else torch says
# still shows. (Moving the model file to torch.export is the way out before TorchScript is removed.)
warnings.filterwarnings("ignore", message=r"`torch\.jit\.(script|save|load)` is deprecated", category=FutureWarning)

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
