"""mlmd models in OpenMM-ML: ``MLPotential("mlmd", modelPath=...)``.

OpenMM-ML finds this module through the ``openmmml.potentials`` entry point
and calls :class:`MLMDPotentialImplFactory` to build the implementation. Then
``createSystem`` and ``createMixedSystem`` (mechanical embedding, interpolation)
work as for OpenMM-ML's own potentials::

    from openmmml import MLPotential
    potential = MLPotential("mlmd", modelPath="model.pt")   # or modelPath="ethanol" (a shipped model)
    system = potential.createSystem(topology)

Options of ``MLPotential``: ``modelPath`` (an exported model file or a shipped
model name), ``backend`` (default ``"python"``: OpenMM-ML deep-copies the
forces of mixed systems, which openmm-torch 1.5's ``TorchForce`` does not
survive on OpenMM 8.6, while ``openmm.PythonForce`` does) and ``device``. Each
can also be given to ``createSystem``/``createMixedSystem`` to override it.

OpenMM-ML imports this module while it is itself being imported, so nothing
here imports OpenMM-ML, torch or the model at import time.
"""

from typing import Any, Dict, Iterable, Optional

from ..errors import MLMDError

#: The backend used inside OpenMM-ML (see the module docstring for why not TorchForce).
OPENMMML_BACKEND = "python"


class MLMDPotentialImplFactory:
    """OpenMM-ML's factory for the potential named ``mlmd``."""

    def createImpl(self, name: str, modelPath: Optional[str] = None, backend: str = OPENMMML_BACKEND,
                   device: Optional[str] = None, **args: Any) -> "MLMDPotentialImpl":
        if modelPath is None:
            raise MLMDError('MLPotential("mlmd") needs modelPath=: an exported mlmd model file '
                            '(mlmd export ... -o model.pt) or a shipped model name such as "ethanol"')
        if args:
            raise MLMDError(f'MLPotential("mlmd"): unknown option(s) {", ".join(sorted(args))}; '
                            "known: modelPath, backend, device")
        return implementation_class()(modelPath, backend, device)


def implementation_class():
    """:class:`MLMDPotentialImpl` as a subclass of OpenMM-ML's ``MLPotentialImpl`` (built on first use,
    when OpenMM-ML has finished importing)."""
    global MLMDPotentialImpl
    if MLMDPotentialImpl is None:
        from openmmml.mlpotential import MLPotentialImpl

        class Implementation(MLPotentialImpl):
            """Adds an mlmd model as one force to an OpenMM-ML System (``atoms``: the ML subset or all)."""

            def __init__(self, model_path: str, backend: str, device: Optional[str]):
                from ..model import load_model

                self.model = load_model(model_path, skin_A=0.0)  # checks the file once, up front
                self.model_path = model_path
                self.backend, self.device = backend, device

            def addForces(self, topology, system, atoms: Optional[Iterable[int]], forceGroup: int,
                          **args: Any) -> None:
                from .force import create_force
                from .system import topology_numbers

                options: Dict[str, Any] = {"backend": self.backend, "device": self.device}
                for name in list(args):
                    if name not in options:
                        raise MLMDError(f"mlmd in OpenMM-ML: unknown option {name!r}; known: backend, device")
                    options[name] = args.pop(name)
                indices = None if atoms is None else sorted(int(i) for i in atoms)
                numbers = [0] * topology.getNumAtoms()
                for index, z in zip(indices or range(len(numbers)), topology_numbers(topology, indices)):
                    numbers[index] = int(z)
                force = create_force(self.model_path, atomic_numbers=numbers, atom_indices=indices,
                                     periodic=topology.getPeriodicBoxVectors() is not None, **options)
                force.setForceGroup(forceGroup)
                system.addForce(force)

        MLMDPotentialImpl = Implementation
    return MLMDPotentialImpl


#: The OpenMM-ML implementation class (None until :func:`implementation_class` first runs).
MLMDPotentialImpl = None

__all__ = ["MLMDPotentialImplFactory", "OPENMMML_BACKEND", "implementation_class"]
