"""User-facing errors.

An :class:`MLMDError` message names the problem and the fix. The command line
prints it on one line and exits with status 2, without a traceback.
"""


class MLMDError(Exception):
    """Bad input or an unusable file, with a message that says what to do."""


class InputFileError(MLMDError, OSError):
    """A file that is missing, unreadable or lacks what is needed."""


class StructureError(MLMDError, ValueError):
    """A structure the code cannot use: NaN coordinates, a singular cell, unknown elements."""
