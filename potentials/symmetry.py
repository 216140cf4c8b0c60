r"""Rotations of batches and the measured rotation error of a potential (torch only).

For a family whose rotational symmetry is learned rather than built in (``transformer``):
random rotations, a batch rotated consistently, and the error of a model under rotation,

    dE = |E(R x) - E(x)| / n_atoms                     (eV/atom, per structure and rotation)
    dF = |F(R x) - R F(x)|                             (eV/Å, per force component)

An orthogonal ``R`` acts on column vectors, ``x -> R x``; positions, forces and cell
vectors are rows here, so they become ``x R^T``, and a stress ``sigma -> R sigma R^T``.
A reflection (``det R = -1``) is a symmetry of the energy too; ``proper=False``
samples from all of O(3).
"""

from typing import Dict, Optional

import torch
from torch import Tensor


def random_rotations(n: int, dtype: torch.dtype = torch.float64, device: Optional[torch.device] = None,
                     proper: bool = True, generator: Optional[torch.Generator] = None) -> Tensor:
    """``[n,3,3]`` Haar-random rotations (QR of a Gaussian matrix with the signs of R's diagonal fixed); with
    ``proper=False`` each is also inverted with probability 1/2 (uniform on O(3))."""
    gaussian = torch.randn((n, 3, 3), dtype=torch.float64, generator=generator)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)
    q = q * torch.sign(torch.linalg.det(q)).view(-1, 1, 1)  # det +1
    if not proper:
        flip = torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2.0 - 1.0
        q = q * flip.view(-1, 1, 1)
    return q.to(dtype=dtype, device=device)


def rotate_batch(batch: Dict[str, Tensor], rotations: Tensor) -> Dict[str, Tensor]:
    """A collated batch (``positions``, ``cell``, ``batch`` and the labels ``forces``, ``stress`` where present)
    with structure ``b`` rotated by ``rotations[b]``; other entries are shared, not copied."""
    rotations = rotations.to(batch["positions"].dtype)
    per_atom = rotations[batch["batch"]].transpose(1, 2)  # R^T per atom
    rotated = dict(batch)
    rotated["positions"] = torch.bmm(batch["positions"].unsqueeze(1), per_atom).squeeze(1)
    rotated["cell"] = torch.bmm(batch["cell"], rotations.transpose(1, 2))
    if "forces" in batch:
        rotated["forces"] = torch.bmm(batch["forces"].unsqueeze(1), per_atom).squeeze(1)
    if "stress" in batch:
        rotated["stress"] = torch.bmm(torch.bmm(rotations, batch["stress"]), rotations.transpose(1, 2))
    return rotated


def rotation_error_sums(model, batch: Dict[str, Tensor], rotations: Tensor) -> Dict[str, Tensor]:
    """Sums over one batch and one rotation per structure (float64 scalars): ``structures``,
    ``energy_abs`` (sum of dE, eV/atom), ``force_components``, ``force_abs`` (sum of |dF|, eV/Å) and
    ``force_scale`` (sum of |F(x)|, eV/Å). ``model`` is called with the contract's inputs."""
    def run(inputs):
        return model(inputs["positions"], inputs["atomic_numbers"], inputs["cell"], inputs["pbc"], inputs["batch"],
                     True, False)

    inputs = {key: batch[key] for key in ("positions", "atomic_numbers", "cell", "pbc", "batch")}
    before = run(inputs)
    after = run(rotate_batch(inputs, rotations))
    n_atoms = torch.bincount(batch["batch"], minlength=batch["cell"].shape[0]).to(torch.float64)
    expected_forces = rotate_batch({**inputs, "forces": before["forces"]}, rotations)["forces"]
    force_error = (after["forces"] - expected_forces).detach().double()
    device = force_error.device
    return {
        "structures": torch.tensor(float(batch["cell"].shape[0]), dtype=torch.float64, device=device),
        "energy_abs": ((after["energy"] - before["energy"]).detach().double().abs() / n_atoms).sum(),
        "force_components": torch.tensor(float(force_error.numel()), dtype=torch.float64, device=device),
        "force_abs": force_error.abs().sum(),
        "force_scale": before["forces"].detach().double().abs().sum(),
    }


def rotation_errors(model, batch: Dict[str, Tensor], n_rotations: int = 4, proper: bool = False,
                    generator: Optional[torch.Generator] = None) -> Dict[str, float]:
    """Mean rotation error of ``model`` on the structures of ``batch`` over ``n_rotations`` random rotations each
    (``proper=False``: rotations and reflections): ``energy_meV_per_atom`` (mean dE), ``force_meV_per_A``
    (mean |dF| per component) and ``force_relative`` (that over the mean |F| component)."""
    totals: Dict[str, float] = {}
    for _ in range(n_rotations):
        rotations = random_rotations(batch["cell"].shape[0], batch["positions"].dtype, batch["positions"].device,
                                     proper, generator)
        for key, value in rotation_error_sums(model, batch, rotations).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return summarize_rotation_errors(totals)


def summarize_rotation_errors(totals: Dict[str, float]) -> Dict[str, float]:
    """Means (meV/atom, meV/Å, relative) from the sums of :func:`rotation_error_sums`."""
    return {
        "energy_meV_per_atom": 1000.0 * totals["energy_abs"] / max(totals["structures"], 1.0),
        "force_meV_per_A": 1000.0 * totals["force_abs"] / max(totals["force_components"], 1.0),
        "force_relative": totals["force_abs"] / max(totals["force_scale"], 1e-300),
    }
