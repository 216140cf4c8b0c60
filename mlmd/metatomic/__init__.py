"""metatomic: mlmd potentials as metatomic ``AtomisticModel`` files, for every metatomic engine.

``mlmd export MODEL_OR_CHECKPOINT -o model-mta.pt --format metatomic`` (or
``mlmd.training.export.export(..., format="metatomic")``) writes the file; it runs in
metatomic-ase's ``MetatomicCalculator``, TorchSim's ``MetatomicModel``, i-PI's
``metatomic`` driver and LAMMPS's ``pair_style metatomic``. :func:`atomistic_model`
gives the in-memory ``AtomisticModel`` of a loaded model.
"""

from .export import atomistic_model, write_metatomic

__all__ = ["atomistic_model", "write_metatomic"]
