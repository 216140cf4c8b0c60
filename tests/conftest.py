import subprocess
import sys

import pytest


def run_mlmd(*args, cwd=None, timeout=600):
    """Run the `mlmd` command line in a fresh interpreter; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "mlmd", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def mlmd_cli():
    return run_mlmd


def pytest_collection_modifyitems(config, items):
    """Skip the ``torchforce`` tests, naming why, where openmm-torch's TorchForce cannot run."""
    from mlmd.openmm.plugins import TORCHFORCE_INSTALL_HINT, torchforce_unavailable

    reason = torchforce_unavailable()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"{reason}; {TORCHFORCE_INSTALL_HINT}")
    for item in items:
        if "torchforce" in item.keywords:
            item.add_marker(skip)
