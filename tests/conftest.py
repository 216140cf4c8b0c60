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
