"""The trust region of the GP-dimer: how far from its data the GP surrogate is followed.

The region is every point whose distance to the *nearest* true observation is
at most ``limit``. Two distances are used (:mod:`mlmd.saddle.distance`):

- optimal transport (``ot-gp-dimer``), in Å: the permutation-invariant
  largest-over-elements summed displacement; the limit is a radius that
  starts at ``trust_radius_A`` and stays within [``trust_min_A``, ``trust_max_A``];
- interatomic distance ratio (``gp-dimer``), dimensionless:
  ``max over pairs |log(r(x) / r(x_n))|`` of Koistinen et al.; the limit
  starts at ``trust_ratio`` and stays within [``trust_ratio / 8``, ``trust_ratio``].
"""

from typing import Callable

import numpy as np

#: a step is pulled back to this fraction of the limit when it leaves the region
PULL_BACK_FRACTION = 2.0 / 3.0
#: bisection halvings used to find the pull-back point along a step
PULL_BACK_HALVINGS = 20
#: the limit grows by this factor after a good prediction, and halves after a bad one or a failure
GROW = 1.5
SHRINK = 0.5
#: smallest predicted energy change (eV) the prediction error is compared with
MIN_PREDICTED_CHANGE_EV = 1e-3


class TrustRegion:
    """Trust region around the GP's true observations, with an adaptive limit.

    The rule, with ``d(x)`` the distance from ``x`` to the nearest observation
    (Å for optimal transport, dimensionless for the distance ratio):

    - :meth:`accept` keeps a step ``x_old -> x_new`` when ``d(x_new) <= limit``.
      Otherwise it pulls the point back along the step to where ``d`` equals
      2/3 of the limit (bisection, 20 halvings; ``x_old`` itself when already
      beyond 2/3) and tells the caller to stop the inner GP loop.
    - :meth:`update` after each true evaluation that the GP predicted: with
      ``error = |E_predicted - E_true|`` and ``change = max(|E_predicted -
      E_previous|, 1 meV)`` the limit grows by 1.5 (to at most
      ``max_limit``) when ``error < change / 4`` and halves (to at least
      ``min_limit``) when ``error > change``.
    - :meth:`on_failure` when the potential could not be evaluated at the
      proposed point: the limit halves, down to ``failure_min_limit``.
    """

    def __init__(self, distance: Callable[[np.ndarray], float], limit: float, min_limit: float, max_limit: float,
                 failure_min_limit: float, unit: str = ""):
        self.distance = distance
        self.limit = float(limit)
        self.min_limit = float(min_limit)
        self.max_limit = float(max_limit)
        self.failure_min_limit = float(failure_min_limit)
        self.unit = unit

    @classmethod
    def optimal_transport(cls, gp, numbers, radius_A: float, min_A: float, max_A: float) -> "TrustRegion":
        """Radius (Å) in the optimal-transport distance to the GP's data; a failure halves it to ``min_A``."""
        from .distance import ot_distances_to  # scipy loads on first use

        def distance(x):
            if hasattr(x, "detach"):  # a tensor of the GP inner loop: the assignment runs on the host (SciPy)
                x = x.detach().cpu().numpy()
            return float(ot_distances_to(x, np.array(gp.X), numbers).min())

        return cls(distance, radius_A, min_A, max_A, failure_min_limit=min_A, unit="Å")

    @classmethod
    def distance_ratio(cls, gp, ratio: float) -> "TrustRegion":
        """Limit on ``max |log(r/r_n)|`` over the GP's data (its features' pairs), within [ratio/8, ratio].

        Failed evaluations halve it without a floor: a potential that cannot be
        evaluated is a hard wall, not an inaccurate GP.
        """
        import torch

        from .kernel import DTYPE

        features = gp.features

        def distance(x):
            with torch.no_grad():
                if torch.is_tensor(x):  # the GP inner loop's tensor, already on the features' device
                    x = x.reshape(1, -1)
                else:
                    x = torch.as_tensor(np.atleast_2d(x), dtype=DTYPE, device=features.device)
                f, _ = features(x)
                return float(features.log_distance_ratio(f, gp.data_features).min())

        return cls(distance, ratio, ratio / 8.0, ratio, failure_min_limit=0.0)

    def contains(self, x) -> bool:
        """Whether ``x`` lies within the limit of the nearest observation."""
        return self.distance(x) <= self.limit

    def accept(self, x_old: np.ndarray, x_new: np.ndarray):
        """``(x, stop)``: the step's end when inside; else the pulled-back point and ``stop=True``."""
        if self.contains(x_new):
            return x_new, False
        target = PULL_BACK_FRACTION * self.limit
        if self.distance(x_old) > target:
            return x_old, True
        lo, hi = 0.0, 1.0
        for _ in range(PULL_BACK_HALVINGS):
            mid = 0.5 * (lo + hi)
            if self.distance(x_old + mid * (x_new - x_old)) <= target:
                lo = mid
            else:
                hi = mid
        return x_old + lo * (x_new - x_old), True

    def update(self, predicted_eV: float, observed_eV: float, previous_eV: float) -> None:
        """Grow or shrink the limit by how well the GP predicted the new true energy."""
        error = abs(predicted_eV - observed_eV)
        change = max(abs(predicted_eV - previous_eV), MIN_PREDICTED_CHANGE_EV)
        if error < 0.25 * change:
            self.limit = min(GROW * self.limit, self.max_limit)
        elif error > change:
            self.limit = max(SHRINK * self.limit, self.min_limit)

    def on_failure(self) -> None:
        """Halve the limit after the potential failed at a proposed point."""
        self.limit = max(SHRINK * self.limit, self.failure_min_limit)

    def describe(self) -> str:
        """The limit for a progress line: ``trust 0.30 Å`` or ``trust 0.200``."""
        if self.unit:
            return f"trust {self.limit:.2f} {self.unit}"
        return f"trust {self.limit:.3f}"
