"""The OpenMM force backends the tests run: TorchForce only where openmm-torch works with this torch.

The TorchForce cases carry the ``torchforce`` marker, which ``conftest.py`` turns into a skip that says
why when openmm-torch is missing or known to crash with the installed torch (the ``torchforce`` extra).
"""

import pytest

from mlmd.openmm.plugins import torchforce_unavailable

#: For ``@pytest.mark.parametrize("backend", BACKENDS)``.
BACKENDS = [pytest.param("torch", marks=pytest.mark.torchforce, id="torch"), "python"]

#: For loops inside one test.
USABLE_BACKENDS = ["torch", "python"] if torchforce_unavailable() is None else ["python"]
