"""Old ``ase.plugins`` entry point, kept for one release (installs made before the entry point moved
still name this module): the plugin record lives in :mod:`mlmd.ase.plugin`."""

from .ase.plugin import __ase_plugins__

__all__ = ["__ase_plugins__"]
