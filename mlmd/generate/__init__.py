"""Reference data from ASE calculators (``mlmd generate``).

- :mod:`~mlmd.generate.systems`: the named systems (recipes) and their registry;
- :mod:`~mlmd.generate.frames`: labelled frames (energy, forces, stress) for training potentials;
- :mod:`~mlmd.generate.trajectories`: reference MD runs for training forecasters;
- :mod:`~mlmd.generate.cli`: the command.

The output of :func:`generate` is extended XYZ with energy, forces, stress (periodic
frames only) and, in every frame's info, where it came from and the generation settings.
"""

from .cli import COMMAND
from .frames import GenerateSettings, generate
from .systems import EMT_METALS, MOLECULE_ALIASES, SYSTEMS, SystemRecipe, metal_configs, molecule_configs, register_system
from .trajectories import generate_trajectories

__all__ = ["COMMAND", "EMT_METALS", "GenerateSettings", "MOLECULE_ALIASES", "SYSTEMS", "SystemRecipe", "generate",
           "generate_trajectories", "metal_configs", "molecule_configs", "register_system"]
