"""e3nn helpers shared by the equivariant families.

- natural-parity irreps ``C x (0e + 1o + 2e + ...)``: the parity of ``l`` is ``(-1)^l``;
- the ``uvu`` tensor product of features and edge spherical harmonics, with one path
  from every input irrep and harmonic to every natural-parity output irrep it can reach,
  and per-edge weights supplied by the caller (a radial network or spline);
- the gated nonlinearity (SiLU on scalars, sigmoid gates on ``l > 0``);
- :func:`eager_e3nn`, which builds e3nn modules that can be deep-copied and pickled.
"""

from contextlib import contextmanager
from typing import List, Tuple

import e3nn
import torch
from e3nn import o3
from torch import Tensor


@contextmanager
def eager_e3nn():
    """Build e3nn modules without pre-scripted pieces.

    With its default ``jit_mode="script"`` e3nn stores ScriptFunctions inside
    modules, which cannot be deep-copied (the trainer's weight average) or
    pickled. The whole model is compiled by TorchScript at export anyway.
    """
    previous = e3nn.get_optimization_defaults()["jit_mode"]
    e3nn.set_optimization_defaults(jit_mode="eager")
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(jit_mode=previous)


def natural_irreps(channels: int, lmax: int) -> o3.Irreps:
    """``channels x (0e + 1o + 2e + ...)`` up to ``lmax``: the parity of each ``l`` is ``(-1)^l``."""
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


def uvu_tensor_product(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: o3.Irreps) -> o3.TensorProduct:
    """e3nn ``TensorProduct`` of ``irreps_in`` and ``irreps_sh`` in ``uvu`` mode with external per-edge weights.

    One path from every input irrep and harmonic to every irrep of their product that
    ``irreps_out`` contains; each path keeps the multiplicity of its input (every channel
    couples to each harmonic separately). The result's ``irreps_out`` lists the paths'
    outputs in order (not simplified); ``weight_numel`` weights per edge.
    """
    irreps_mid: List[Tuple[int, Tuple[int, int]]] = []
    instructions = []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in irreps_out:
                    instructions.append((i, j, len(irreps_mid), "uvu", True))
                    irreps_mid.append((mul, ir_out))
    return o3.TensorProduct(irreps_in, irreps_sh, o3.Irreps(irreps_mid), instructions, shared_weights=False,
                            internal_weights=False)


class GatedActivation(torch.nn.Module):
    """Gate on ``C x 0e + G x 0e + (gated irreps)``: SiLU on the first scalars, sigmoid gates on the rest.

    Gate ``g`` of ``G = C * lmax`` multiplies channel ``g`` of the gated irreps,
    which are laid out as ``C x 1o + C x 2e + ...``. Equivariant because each
    irrep is scaled by an invariant.
    """

    def __init__(self, channels: int, lmax: int):
        super().__init__()
        self.channels = channels
        self.num_gates = channels * lmax
        blocks: List[Tuple[int, int]] = []
        start = channels + self.num_gates
        for l in range(1, lmax + 1):
            blocks.append((start, 2 * l + 1))
            start += channels * (2 * l + 1)
        self.blocks = blocks
        self.irreps_in = o3.Irreps(f"{channels}x0e") + o3.Irreps(f"{self.num_gates}x0e") + natural_irreps(channels, lmax)[1:]
        self.irreps_out = natural_irreps(channels, lmax)

    def forward(self, x: Tensor) -> Tensor:
        c = self.channels
        parts: List[Tensor] = [torch.nn.functional.silu(x[:, :c])]
        gates = torch.sigmoid(x[:, c:c + self.num_gates])
        for index, (start, dim) in enumerate(self.blocks):
            block = x[:, start:start + c * dim].reshape(x.shape[0], c, dim)
            gate = gates[:, index * c:(index + 1) * c].unsqueeze(-1)
            parts.append((block * gate).reshape(x.shape[0], c * dim))
        return torch.cat(parts, dim=1)
