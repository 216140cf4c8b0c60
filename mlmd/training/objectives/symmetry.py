r"""The ``symmetry`` objective: the ``potential`` objective for a family whose rotational symmetry is learned.

A family that declares ``training_objective = "symmetry"`` (the ``transformer``) is trained on the
same labelled frames, loss weights and metrics as every potential, in one of three modes set by
``training.symmetry`` (registry :data:`SYMMETRY_MODES`; a new mode registers with
:func:`register_symmetry_mode`). With ``L_EF`` the energy/force/stress loss of
:mod:`.potential` and ``R_b`` a random rotation of structure ``b`` (from O(3) with
``training.reflections``, else SO(3); positions, cell, forces and stress rotated together,
:func:`potentials.symmetry.rotate_batch`):

- ``plain``: ``L = L_EF(x)``, the frames as they are;
- ``augment``: ``L = L_EF(R x)``, every batch rotated afresh;
- ``learned`` (TransIP, "Learning Inter-Atomic Potentials without Explicit Equivariance"):

      L = (L_EF(x) + L_EF(R x)) / 2  +  w_c InfoNCE
      z_b = mean_{i in b} h_i(x),   z'_b = mean_{i in b} h_i(R_b x)       pooled latents of the energy pass
      s_bc = cos(T(z_b, R_b), z'_c) / tau                                 T: the model's latent_transform
      InfoNCE = -1/B sum_b log( exp(s_bb) / sum_c exp(s_bc) )

  positives are the same configuration rotated, negatives the other configurations of the batch
  (so ``data.batch_size`` >= 2); ``w_c = training.contrastive_weight``, ``tau =
  training.contrastive_temperature``. A step costs about 1.5 times a plain one (two copies in one
  batch; measured 40 against 27 ms for 8 ethanols, 64 channels, float32, one thread): the latents are
  read from the energy pass (a forward hook on the model's ``latent_output``). Not tried under ``torchrun``.

After training, the best weights' rotation error is measured on the validation frames
(``training.equivariance_rotations`` random rotations and reflections each, a generator of its
own so the training RNG is untouched) and stored as the model's ``equivariance_error``: energy
(meV/atom) and force (meV/Å) errors, the force error relative to the mean |F|, and both relative
to the model's own validation MAE (``energy_vs_mae``, ``force_vs_mae``). It goes into every
checkpoint written after it and into the exported model's metadata (``mlmd.load_model(path).equivariance_error``).
"""

from typing import Any, Dict, Mapping

from ...errors import MLMDError
from ..config import boolean, number, string
from ..registry import register_in
from . import register_objective
from .potential import SCHEMA, PotentialObjective, batch_loss, run_model, wants_stress

# Mode name -> class with ``loss(objective, module, batch)``.
SYMMETRY_MODES: Dict[str, Any] = {}


def register_symmetry_mode(name: str):
    """Class decorator: make a training mode selectable as ``training.symmetry = name``."""
    return register_in(SYMMETRY_MODES, name)


def symmetry_schema() -> Dict[str, Dict[str, tuple]]:
    """The ``potential`` schema plus the keys of the modes."""
    schema = {section: dict(keys) for section, keys in SCHEMA.items()}
    schema["training"].update({
        "symmetry": ("learned", lambda value: string(tuple(SYMMETRY_MODES))(value), '"learned"'),
        "contrastive_weight": (0.1, number(0), "0.1"),
        "contrastive_temperature": (0.1, number(0, strict_min=True), "0.1"),
        "reflections": (True, boolean, "true"),
        "equivariance_rotations": (4, number(0, integer=True), "4 (0: do not measure)"),
    })
    return schema


def draw_rotations(batch, reflections: bool):
    """One random rotation per structure of ``batch`` (from torch's global RNG, which checkpoints keep)."""
    from potentials.symmetry import random_rotations

    return random_rotations(batch["cell"].shape[0], batch["positions"].dtype, batch["positions"].device,
                            proper=not reflections)


def concatenate(first, second):
    """Two collated batches as one (the structures of ``second`` after those of ``first``)."""
    import torch

    both = {key: torch.cat([first[key], second[key]]) for key in first if key != "batch"}
    both["batch"] = torch.cat([first["batch"], second["batch"] + first["cell"].shape[0]])
    return both


def pool(latents, batch):
    """Mean per-atom latent ``[N, C]`` of each structure of ``batch``: ``[B, C]``."""
    import torch

    n_structures = batch["cell"].shape[0]
    sums = torch.zeros((n_structures, latents.shape[1]), dtype=latents.dtype, device=latents.device)
    counts = torch.bincount(batch["batch"], minlength=n_structures).to(latents.dtype)
    return sums.index_add(0, batch["batch"], latents) / counts.unsqueeze(-1)


def run_with_latents(module, batch, compute_stress: bool):
    """The contract's outputs on ``batch`` and the per-atom latent of that same pass, read by a forward hook
    on the model's ``latent_output`` (so the latent costs no second forward pass)."""
    captured = []
    handle = unwrapped(module).latent_output.register_forward_hook(
        lambda layer, inputs, output: captured.append(output))
    try:
        out = run_model(module, batch, compute_stress)
    finally:
        handle.remove()
    return out, captured[0]


def logits_of(model, pooled, rotations, temperature: float):
    """``s [B, B]`` from the pooled latents ``[2B, C]`` of the originals and then their rotated copies: cosine
    similarity of ``T(z_b, R_b)`` with ``z'_c`` over ``temperature``; the positives are on the diagonal."""
    import torch

    n = rotations.shape[0]
    predicted = model.latent_transform(pooled[:n], rotations.to(pooled.dtype))
    predicted = torch.nn.functional.normalize(predicted, dim=1)
    target = torch.nn.functional.normalize(pooled[n:], dim=1)
    return predicted @ target.T / temperature


def contrastive_logits(model, batch, rotated, rotations, temperature: float):
    """:func:`logits_of` for ``batch`` and its copy ``rotated`` by ``rotations``, latents from ``model.latents``."""
    both = concatenate(batch, rotated)
    latents = model.latents(both["positions"], both["atomic_numbers"], both["cell"], both["pbc"], both["batch"])
    return logits_of(model, pool(latents, both), rotations, temperature)


def info_nce(logits):
    """Cross-entropy of each row's diagonal entry against the row (the mean over rows)."""
    import torch

    return torch.nn.functional.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def unwrapped(module):
    """The model itself under a DistributedDataParallel wrapper."""
    return getattr(module, "module", module)


@register_symmetry_mode("plain")
class PlainMode:
    """The frames as they are."""

    @staticmethod
    def loss(objective, module, batch):
        compute_stress = wants_stress(batch, objective.use_stress)
        return batch_loss(run_model(module, batch, compute_stress), batch, objective.weights, compute_stress)


@register_symmetry_mode("augment")
class AugmentMode:
    """Every batch rotated afresh (positions, cell, forces and stress together)."""

    @staticmethod
    def loss(objective, module, batch):
        from potentials.symmetry import rotate_batch

        rotated = rotate_batch(batch, draw_rotations(batch, objective.settings["reflections"]))
        return PlainMode.loss(objective, module, rotated)


@register_symmetry_mode("learned")
class LearnedMode:
    """The original and a rotated copy, plus the contrastive term of TransIP."""

    needs = ("latent_output", "latent_transform")

    @staticmethod
    def loss(objective, module, batch):
        from potentials.symmetry import rotate_batch

        settings = objective.settings
        rotations = draw_rotations(batch, settings["reflections"])
        both = concatenate(batch, rotate_batch(batch, rotations))
        compute_stress = wants_stress(both, objective.use_stress)
        out, latents = run_with_latents(module, both, compute_stress)
        loss = batch_loss(out, both, objective.weights, compute_stress)
        if settings["contrastive_weight"] > 0:
            logits = logits_of(unwrapped(module), pool(latents, both), rotations, settings["contrastive_temperature"])
            loss = loss + settings["contrastive_weight"] * info_nce(logits)
        return loss


@register_objective("symmetry")
class SymmetryObjective(PotentialObjective):
    """The ``potential`` objective with the modes of ``training.symmetry`` and the measured rotation error."""

    def __init__(self, config: Dict[str, Any], log=print):
        super().__init__(config, log)
        self.settings = config["training"]
        self.mode = SYMMETRY_MODES[self.settings["symmetry"]]

    @staticmethod
    def schema() -> Dict[str, Dict[str, tuple]]:
        return symmetry_schema()

    @staticmethod
    def finish_config(result: Dict[str, Any], base, source: str) -> None:
        PotentialObjective.finish_config(result, base, source)
        training = result["training"]
        if training["symmetry"] == "learned" and training["contrastive_weight"] > 0 and result["data"]["batch_size"] < 2:
            raise MLMDError(f"{source}: training.symmetry = \"learned\" contrasts the configurations of a batch, "
                            "so data.batch_size must be at least 2; raise it or set contrastive_weight = 0")

    def attach(self, model) -> None:
        missing = [name for name in getattr(self.mode, "needs", ()) if not hasattr(model, name)]
        if missing:
            raise MLMDError(f"training.symmetry = {self.settings['symmetry']!r} needs a model with "
                            f"{' and '.join(missing)}, which family {self.config['model']['family']!r} lacks; "
                            "use symmetry = \"augment\" or \"plain\"")

    def loss(self, module, batch):
        return self.mode.loss(self, module, batch), len(batch["energy"])

    def calibration_sums(self, module, indices, batch_size: int, dtype, device):
        """Rotation-error sums of the best weights on the validation frames, and their label errors."""
        import torch

        from potentials.symmetry import random_rotations, rotation_error_sums

        if self.settings["equivariance_rotations"] == 0:
            return None
        generator = torch.Generator().manual_seed(int(self.settings["seed"]) + 1)
        sums = torch.zeros(7, dtype=torch.float64, device=device)
        was_training = module.training
        module.eval()
        try:
            for batch in self.dataset.batches(indices, batch_size, dtype=dtype):
                batch = {key: value.to(device) for key, value in batch.items()}
                out = run_model(module, batch, False)
                sums[5] += ((out["energy"] - batch["energy"]).abs() / batch["n_atoms"]).double().sum()
                sums[6] += (out["forces"] - batch["forces"]).abs().double().sum()
                for _ in range(self.settings["equivariance_rotations"]):
                    rotations = random_rotations(batch["cell"].shape[0], dtype, device,
                                                 proper=not self.settings["reflections"], generator=generator)
                    parts = rotation_error_sums(module, batch, rotations)
                    sums[:5] += torch.stack([parts[key] for key in ROTATION_SUMS]).to(device)
        finally:
            module.train(was_training)
        return sums

    def calibrate(self, module, sums) -> Dict[str, Any]:
        from potentials.symmetry import summarize_rotation_errors

        values = [float(v) for v in sums]
        error = summarize_rotation_errors(dict(zip(ROTATION_SUMS, values[:5])))
        rotations = self.settings["equivariance_rotations"]
        frames = values[0] / rotations
        energy_mae = 1000.0 * values[5] / frames  # meV/atom
        force_mae = 1000.0 * values[6] / (values[2] / rotations)  # meV/Å
        error.update(energy_vs_mae=error["energy_meV_per_atom"] / max(energy_mae, 1e-300),
                     force_vs_mae=error["force_meV_per_A"] / max(force_mae, 1e-300),
                     frames=frames, rotations=float(rotations))
        self.log(describe_equivariance(error))
        return {"equivariance_error": error}


# Order of the rotation sums in calibration_sums (those of potentials.symmetry.rotation_error_sums).
ROTATION_SUMS = ("structures", "energy_abs", "force_components", "force_abs", "force_scale")


def describe_equivariance(error: Mapping[str, float]) -> str:
    """One log line of a measured rotation error."""
    return (f"rotation error on {error['frames']:.0f} validation frames x {error['rotations']:.0f} rotations: "
            f"E {error['energy_meV_per_atom']:.3g} meV/atom ({error['energy_vs_mae']:.2g} of the energy MAE), "
            f"F {error['force_meV_per_A']:.3g} meV/Å ({error['force_vs_mae']:.2g} of the force MAE, "
            f"{error['force_relative']:.2g} of mean |F|)")
