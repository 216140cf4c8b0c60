"""Analytic forecasters with the forecaster contract, TorchScript-able, for the rollout tests.

- :class:`HarmonicForecaster`: the exact propagator of independent 3D harmonic oscillators about
  fixed centres, u = x - c:  u' = u cos ωτ + (v/ω) sin ωτ,  v' = -u ω sin ωτ + v cos ωτ.
- :class:`FreeFlightForecaster`: d = v τ, v' = v.
- :class:`BrokenForecaster`: free flight that goes wrong in one of three ways ("nan", "collapse", "heat").

Free flight also passes the forecaster conformance suite (``tests/test_conformance_forecasters.py``).
"""

from typing import Dict, List

import torch
from torch import Tensor


def local_index(batch: Tensor) -> Tensor:
    counts = torch.bincount(batch)
    first = torch.cumsum(counts, 0) - counts
    return torch.arange(batch.shape[0], device=batch.device) - first[batch]


class AnalyticForecaster(torch.nn.Module):
    """What the analytic forecasters share: the interval ``interval_fs`` (fs), the species, a nominal
    cutoff (Å) and the family name that engines read, and a float64 ``dtype_probe``."""

    def __init__(self, interval_fs: float, species: List[int]):
        super().__init__()
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=torch.float64))
        self.interval_fs = float(interval_fs)
        self.species = [int(z) for z in species]
        self.cutoff = 3.0
        self.family = "forecaster"


class HarmonicForecaster(AnalyticForecaster):
    """Exact harmonic propagator; ``centres [n,3]`` Å and ``omega [n]`` 1/fs per atom of a replica."""

    def __init__(self, centres: Tensor, omega: Tensor, interval_fs: float, species: List[int]):
        super().__init__(interval_fs, species)
        self.register_buffer("centres", centres.to(torch.float64))
        self.register_buffer("omega", omega.to(torch.float64))

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor,
                velocities: Tensor) -> Dict[str, Tensor]:
        index = local_index(batch)
        omega = self.omega.to(positions.dtype)[index].unsqueeze(1)
        u = positions - self.centres.to(positions.dtype)[index]
        cos = torch.cos(omega * self.interval_fs)
        sin = torch.sin(omega * self.interval_fs)
        u_new = u * cos + velocities / omega * sin
        v_new = -u * omega * sin + velocities * cos
        return {"displacement": u_new - u, "velocities": v_new}


class FreeFlightForecaster(AnalyticForecaster):
    """Free flight: displacement v τ, unchanged velocities."""

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor,
                velocities: Tensor) -> Dict[str, Tensor]:
        return {"displacement": velocities * self.interval_fs, "velocities": velocities.clone()}


class BrokenForecaster(AnalyticForecaster):
    """Free flight that fails after it has been called ``after`` times.

    ``mode``: ``"nan"`` returns NaN displacements, ``"collapse"`` moves every atom onto the first atom of its
    replica, ``"heat"`` multiplies the velocities by 10.
    """

    def __init__(self, mode: str, after: int, interval_fs: float, species: List[int]):
        super().__init__(interval_fs, species)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.mode = mode
        self.after = int(after)

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor,
                velocities: Tensor) -> Dict[str, Tensor]:
        self.calls += 1
        displacement = velocities * self.interval_fs
        new_velocities = velocities.clone()
        if int(self.calls) > self.after:
            if self.mode == "nan":
                displacement = displacement * float("nan")
            elif self.mode == "collapse":
                first = torch.nonzero(local_index(batch) == 0).squeeze(1)
                displacement = positions[first][batch] - positions + 0.01 * displacement
            else:
                new_velocities = velocities * 10.0
        return {"displacement": displacement, "velocities": new_velocities}
