"""mlmd: learned interatomic potentials and trajectory forecasters in the MD engines people already use."""

__version__ = "0.1.0"

from .errors import MLMDError  # noqa: E402

__all__ = ["MLMDError", "__version__"]
