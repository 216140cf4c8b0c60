"""``mlmd export --format metatomic``: an mlmd potential as a metatomic ``AtomisticModel`` file.

The file runs in every metatomic engine (metatomic's ASE calculator, TorchSim's
``MetatomicModel``, i-PI's ``metatomic`` driver, LAMMPS's ``pair_style metatomic``,
GROMACS, PLUMED). It holds :class:`~mlmd.metatomic.potential.MetatomicPotential` around
the model (its own per-atom energies on the engine's full neighbour list, cutoff in Å,
so forces and stress come from the engine's autograd), and:

- ``ModelCapabilities``: ``energy`` in eV (per system, and per atom on request),
  ``atomic_types`` = the model's species, lengths in Å, the model's dtype, devices
  cuda then cpu, and ``interaction_range`` = cutoff x number of message-passing
  layers (``config["num_layers"]``, 1 for a family without layers): how far a
  ghost atom still changes a local energy, what domain decomposition needs;
- ``ModelMetadata``: name, description, authors and references from the model's
  metadata (keys ``name``, ``description``, ``authors``, ``references``), else a
  name and description made from its family, species, cutoff and training record.

Before the file is renamed into place it is loaded back with metatomic-ase's
calculator and compared with mlmd's ASE calculator (energy and forces,
:func:`~mlmd.training.export.check_against_calculator`, and the virial ``sigma V``
on the periodic probe); a disagreement raises :class:`ExportMismatch` and nothing
is written.
"""

from pathlib import Path
from typing import Dict, List

import numpy as np

from ..errors import MLMDError
from ..io import atomic_path
from ..training.export import ExportMismatch, check_against_calculator, probe_structures, register_export_format

#: Tolerances of the export check: ``atol_eV + RTOL * max(|E|, max |F|, 1)`` (eV, eV/Å), float32 roundoff x 100.
RTOL = 1e-5
ATOL_EV = 1e-6


def import_metatomic():
    """``metatomic.torch``, or a one-line error saying how to install it."""
    try:
        import metatomic.torch as metatomic
    except ImportError as exc:
        raise MLMDError(f"the metatomic export needs metatomic-torch and metatomic-ase ({exc}); install them with "
                        "`pip install 'mlmd[metatomic]'`") from exc
    return metatomic


def interaction_range(model) -> float:
    """Å over which an atom's energy depends on other atoms: cutoff x message-passing layers."""
    layers = int(model.metadata.get("config", {}).get("num_layers", 1))
    return model.cutoff * max(layers, 1)


def describe(model) -> str:
    """A one-paragraph description of ``model`` from its metadata."""
    from ase.data import chemical_symbols

    metadata = model.metadata
    elements = ", ".join(chemical_symbols[z] for z in model.species)
    text = (f"mlmd {model.family} potential for {elements}; cutoff {model.cutoff:g} Å, {metadata['dtype']}, "
            f"exported by mlmd {metadata.get('mlmd_version', '?')}")
    if metadata.get("training_data_hash"):
        text += f"; training data sha256 {metadata['training_data_hash'][:16]}"
    training = metadata.get("training") or {}
    if training:
        text += f"; {training.get('weights', '')} weights of epoch {training.get('epoch', '?')}"
    metrics = metadata.get("test_metrics") or {}
    for key, unit in (("energy_mae_meV_per_atom", "meV/atom"), ("force_mae_meV_per_A", "meV/Å")):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value):
            text += f"; test {key.split('_')[0]} MAE {value:.3g} {unit}"
    return text


def model_metadata(model):
    """metatomic ``ModelMetadata`` of an mlmd model."""
    metatomic = import_metatomic()
    metadata = model.metadata
    name = metadata.get("name") or (f"mlmd-{model.path.stem}" if model.path else f"mlmd-{model.family}")
    references: Dict[str, List[str]] = {key: [str(entry) for entry in value]
                                        for key, value in dict(metadata.get("references") or {}).items()}
    return metatomic.ModelMetadata(name=str(name), description=str(metadata.get("description") or describe(model)),
                                   authors=[str(author) for author in metadata.get("authors") or []],
                                   references=references)


def model_capabilities(model):
    """metatomic ``ModelCapabilities`` of an mlmd potential (energy in eV, lengths in Å)."""
    metatomic = import_metatomic()
    return metatomic.ModelCapabilities(
        outputs={"energy": metatomic.ModelOutput(unit="eV", sample_kind="atom")},
        atomic_types=sorted(model.species), interaction_range=interaction_range(model), length_unit="angstrom",
        supported_devices=["cuda", "cpu"], dtype=str(model.metadata["dtype"]))


def atomistic_model(model):
    """The metatomic ``AtomisticModel`` of a loaded mlmd potential (:class:`mlmd.model.Model`);
    as metatomic requires, the model's parameters no longer require gradients afterwards."""
    metatomic = import_metatomic()
    from .potential import MetatomicPotential

    if model.is_forecaster:
        raise MLMDError(f"{model!r} is a trajectory forecaster: it has no energy, so it cannot be a metatomic "
                        "model; export a potential")
    if not hasattr(model.module, "atomic_energies") or not hasattr(model.module, "species_index"):
        raise MLMDError(f"{model!r} has no atomic_energies/species_index methods (not an mlmd potential); "
                        "re-export it with `mlmd export` from its checkpoint")
    wrapper = MetatomicPotential(model.module, model.cutoff).eval()
    return metatomic.AtomisticModel(wrapper, model_metadata(model), model_capabilities(model))


def check_virial(model, calculator, structures) -> float:
    """Compare the virial ``sigma V`` (eV) of ``calculator`` with mlmd's ASE calculator on the periodic
    ``structures``; raise :class:`ExportMismatch` beyond :data:`ATOL_EV` + :data:`RTOL` x scale, the scale being
    the largest of |E|, |sigma V| and cutoff x max |F| (eV)."""
    from ..ase.calculator import MLMDCalculator

    reference_calculator = MLMDCalculator(model)
    worst = 0.0
    for atoms in structures:
        if not atoms.pbc.all():
            continue
        reference, exported = atoms.copy(), atoms.copy()
        reference.calc, exported.calc = reference_calculator, calculator
        volume = atoms.get_volume()
        expected = reference.get_stress(voigt=False) * volume
        difference = float(np.abs(exported.get_stress(voigt=False) * volume - expected).max())
        # The virial sums pair terms r_ij F_ij, each up to cutoff x max |F|, and cancels among them: its
        # float32 roundoff scales with those terms, not with the (smaller) total.
        pair_scale = model.cutoff * float(np.abs(reference.get_forces()).max(initial=0.0))
        scale = max(abs(reference.get_potential_energy()), float(np.abs(expected).max()), pair_scale, 1.0)
        worst = max(worst, difference)
        if not difference <= ATOL_EV + RTOL * scale:
            raise ExportMismatch(f"the metatomic export's virial disagrees with mlmd's ASE calculator by "
                                 f"{difference:.3g} eV on a {len(atoms)}-atom periodic structure; nothing was "
                                 "written. Report this with the model file")
    return worst


def check_file(path, model) -> float:
    """Largest difference (eV, eV/Å) between the metatomic file ``path`` run by metatomic-ase and mlmd's
    ASE calculator on :func:`~mlmd.training.export.probe_structures`; :class:`ExportMismatch` beyond tolerance."""
    try:
        from metatomic_ase import MetatomicCalculator
    except ImportError as exc:
        raise MLMDError(f"checking a metatomic export needs metatomic-ase ({exc}); install it with "
                        "`pip install 'mlmd[metatomic]'`") from exc
    calculator = MetatomicCalculator(str(path), device=str(model.device), check_consistency=True)

    def evaluate(atoms):
        atoms.calc = calculator
        return atoms.get_potential_energy(), atoms.get_forces()

    structures = probe_structures(model)
    worst = check_against_calculator("metatomic", model, evaluate, structures, rtol=RTOL, atol_eV=ATOL_EV)
    return max(worst, check_virial(model, calculator, structures))


@register_export_format("metatomic")
def write_metatomic(model, output, overwrite: bool = False) -> Path:
    """Write ``model`` (a loaded mlmd potential) as a metatomic model file at ``output``, checked first."""
    output = Path(output)
    # AtomisticModel freezes the parameters it wraps and saving moves them to the CPU: give an
    # in-memory model its flags and device back.
    flags = [(parameter, parameter.requires_grad) for parameter in model.module.parameters()]
    device = model.device
    try:
        atomistic = atomistic_model(model)
        with atomic_path(output) as temporary:
            atomistic.save(str(temporary))
            model.to(device)
            check_file(temporary, model)
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
    return output
