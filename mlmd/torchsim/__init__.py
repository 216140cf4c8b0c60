"""TorchSim: mlmd potentials in TorchSim's batched integrators, optimizers and runners.

``MLMDModel(model, device=..., dtype=...)`` is a ``torch_sim.models.interface.ModelInterface``
(:mod:`mlmd.torchsim.model`): energy, forces and stress of a batched ``SimState``::

    import torch_sim as ts
    from mlmd.torchsim import MLMDModel
    final = ts.integrate(system=[atoms_1, atoms_2], model=MLMDModel("ethanol"), integrator=ts.nvt_langevin,
                         n_steps=1000, timestep=0.0005, temperature=300)   # timestep in ps, K
"""

from ..errors import MLMDError

try:
    import torch_sim  # noqa: F401
except ImportError as exc:
    raise MLMDError(f"mlmd.torchsim needs torch-sim-atomistic ({exc}); install it with "
                    "`pip install 'mlmd[torchsim]'`") from exc

from .model import MLMDModel  # noqa: E402

__all__ = ["MLMDModel"]
