"""Loading openmm-torch: its Python module and its OpenMM plugin libraries.

openmm-torch's extension and its OpenMM plugins link torch's (CUDA)
libraries, which only torch's own loader finds. Importing torch first is
enough for the extension, but OpenMM loads its plugins when ``openmm`` is
first imported, so if that happened before torch, the plugins failed then and
:func:`import_openmmtorch` loads them again. A plugin that still cannot be
loaded (a GPU plugin on a machine without that GPU runtime) stays unavailable;
its error is kept in :data:`PLUGIN_FAILURES` and logged at debug level.
"""

import contextlib
import logging
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Dict, Optional

import torch  # noqa: F401  (before openmm: openmm-torch's plugins link torch's libraries)
import openmm

from ..errors import MLMDError

logger = logging.getLogger(__name__)

_TORCH_PLUGIN_FAILURE = re.compile(r"^Error loading library (.*libOpenMMTorch[^/\\:]*)")

#: openmm-torch plugin libraries that failed to load again: path -> OpenMM's error message.
PLUGIN_FAILURES: Dict[str, str] = {}
_RETRIED = set()


#: openmm-torch releases up to this one crash inside TorchForce on torch >= 2.10 (upstream issue 175).
LAST_OPENMMTORCH_BEFORE_TORCH_2_10 = (1, 5)

TORCHFORCE_INSTALL_HINT = ("pip install 'mlmd[torchforce]' (it brings openmm-torch and pins torch below 2.10), "
                           "or use backend='python' (openmm.PythonForce, any torch)")


def release(text: str) -> tuple:
    """The leading numeric release of a version string: ``"2.9.1+cpu"`` -> ``(2, 9, 1)``."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def torchforce_unavailable() -> Optional[str]:
    """Why openmm-torch's ``TorchForce`` cannot be used here, or None when it can.

    Decided without importing openmm-torch: the wheel is either missing, or it
    is a release known to crash (not raise) inside TorchForce on this torch.
    """
    try:
        installed = version("openmmtorch")
    except PackageNotFoundError:
        return "openmm-torch is not installed"
    if release(installed) <= LAST_OPENMMTORCH_BEFORE_TORCH_2_10 and release(torch.__version__) >= (2, 10):
        return (f"openmm-torch {installed} crashes inside TorchForce with torch {torch.__version__} "
                f"(upstream openmm-torch issue 175)")
    return None


def import_openmmtorch():
    """The ``openmmtorch`` module, with its OpenMM plugins loaded; an :class:`MLMDError` if it is not usable.

    Also silences the root-logger warning of its ``simtk.openmm`` import.
    """
    reason = torchforce_unavailable()
    if reason is not None:
        raise MLMDError(f"the TorchForce backend is not usable: {reason}; {TORCHFORCE_INSTALL_HINT}")
    try:
        with quiet_root_logger():
            import openmmtorch
    except (ImportError, OSError) as exc:
        raise MLMDError(
            f"openmm-torch is not usable here ({type(exc).__name__}: {exc}); {TORCHFORCE_INSTALL_HINT}"
        ) from exc
    for failure in openmm.Platform.getPluginLoadFailures():
        match = _TORCH_PLUGIN_FAILURE.match(failure)
        if match and match.group(1) not in _RETRIED:
            _RETRIED.add(match.group(1))
            try:
                openmm.Platform.loadPluginLibrary(match.group(1))
            except openmm.OpenMMException as exc:
                PLUGIN_FAILURES[match.group(1)] = str(exc)
                logger.debug("openmm-torch plugin %s stays unavailable: %s", match.group(1), exc)
    return openmmtorch


@contextlib.contextmanager
def quiet_root_logger():
    """Suppress log records up to WARNING (from any logger) inside the block."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


__all__ = ["PLUGIN_FAILURES", "TORCHFORCE_INSTALL_HINT", "import_openmmtorch", "quiet_root_logger", "release",
           "torchforce_unavailable"]
