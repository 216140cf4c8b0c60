"""Per-atom energy readouts and per-species reference energies.

A message-passing family reads an energy contribution out of every layer's
scalar channels and adds it to a per-species baseline:

    E_i = E_ref[z_i] + shift + scale * sum_t readout_t(h_i^(t)_scalars)

``readout_t`` is a bias-free linear map for every layer but the last, and a
one-hidden-layer SiLU MLP for the last. ``E_ref`` (eV, ``species`` order),
``shift`` (eV/atom) and ``scale`` (eV) come from the training data.
"""

from typing import List, Optional, Sequence

import torch


def reference_energies(values: Optional[Sequence[float]], n_species: int) -> List[float]:
    """Per-species reference energies (eV) as floats, zeros when ``values`` is None; checks their number."""
    if values is None:
        return [0.0] * n_species
    if len(values) != n_species:
        raise ValueError(f"atomic_energies_ref has {len(values)} values for {n_species} species")
    return [float(e) for e in values]


def layer_readout(channels: int, hidden: int, last: bool) -> torch.nn.Module:
    """The energy readout of one layer's ``channels`` scalars: ``Linear(channels, 1, bias=False)``, or for
    the ``last`` layer ``Linear(channels, hidden) -> SiLU -> Linear(hidden, 1)``."""
    if not last:
        return torch.nn.Linear(channels, 1, bias=False)
    return torch.nn.Sequential(torch.nn.Linear(channels, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 1))
