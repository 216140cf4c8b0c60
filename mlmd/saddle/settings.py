"""Settings of a saddle search (:class:`SaddleSettings`), validated in one place.

Units: lengths in Å (``*_A``), forces and gradients in eV/Å, curvatures in
eV/Å²; ``trust_ratio`` is dimensionless (a largest ``|log(r/r')|`` over atom
pairs). :func:`mlmd.saddle.search` builds these settings from its keyword
arguments and ``mlmd saddle`` builds them from its options; every check of a
setting lives in :meth:`SaddleSettings.validate`.
"""

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import MLMDError

#: the initial-mode names a search understands besides an explicit [n, 3] array
MODE_NAMES = ("random", "displacement")

#: the coordinates P-RFO may work in (``auto``: internal for a molecule, else Cartesian)
COORDINATE_CHOICES = ("auto", "cartesian", "internal")

#: GP rotations checked by true image evaluations before the first step, for a random or displacement mode
DEFAULT_INITIAL_ROTATIONS = 5


class SettingsError(MLMDError, ValueError):
    """A saddle-search setting out of its range; the message names the setting and what it accepts."""


@dataclass
class SaddleSettings:
    """Every knob of a saddle search, with the defaults of :func:`mlmd.saddle.search`.

    ``method``: a name registered in :data:`mlmd.saddle.METHODS`, or ``auto``
    (:func:`mlmd.saddle.methods.auto_method`: GP-P-RFO for a free molecule, else P-RFO). ``mode``: an
    [n_atoms, 3] or [n_free, 3] array, ``'random'`` or ``'displacement'``.
    ``fmax`` (eV/Å): convergence threshold on the largest per-atom gradient;
    ``max_calls``: budget of true evaluations (relaxation calls are counted
    apart). ``displace_A``: standard deviation (Å) of a seeded Gaussian
    displacement of the free atoms (or of ``displace_atoms``) applied to the
    start. ``max_step_A``: largest translation (Å); None takes the method's
    default. ``prune``: fit the GP hyperparameters on ``prune_size`` points
    (``prune_newest`` newest plus farthest-point samples); None takes the
    method's default. ``trust_ratio`` bounds the distance-ratio trust region
    of ``gp-dimer``; ``trust_radius_A`` (between ``trust_min_A`` and
    ``trust_max_A``) starts the optimal-transport trust region of
    ``ot-gp-dimer``. ``initial_rotations``: None means 5 for a random or
    displacement mode and 0 for a given mode. A saddle needs a curvature along
    the mode below ``-min_negative_curvature`` (eV/Å²). ``max_failures``:
    the search stops after this many failed evaluations in a row.

    Verification of a converged end point (:mod:`mlmd.saddle.verify`; off
    with ``verify=False``): the Hessian index from at most
    ``verify_max_calls`` finite-difference calls (step ``verify_step_A``),
    curvatures within ``±curvature_tolerance`` (eV/Å²) counting as zero; bonds
    are pairs closer than ``bond_factor`` x the sum of covalent radii, and
    every atom bonded at the start must keep a neighbour within
    ``max_bond_stretch`` x that length; the energy above the start must lie in
    at most ``max_barrier_eV`` (eV; more than 10 meV below the start warns); no atom may move more than
    ``max_displacement_A`` (Å); a given mode must keep ``|cos| >=
    min_mode_overlap`` with the final one. With ``relax`` the start is relaxed
    too, and one side of the saddle must relax to within
    ``connect_tolerance_A`` (Å, largest atom displacement) of the start's
    minimum: a saddle that does not connect to the start is of another
    reaction. ``product`` ([n_atoms, 3] positions in Å, same atoms and order as
    the start) names the intended end state: it implies ``relax``, the product
    is relaxed on the same potential, and the saddle's other side must relax to
    within ``connect_tolerance_A`` of it, so a saddle of a competing reaction
    from the same start is not reported as verified. It also orients the
    search: the mode is turned to point towards the product, and where the
    curvature along it is still positive every method climbs along ``+mode``
    (without a product the side of the minimum the start lies on decides, as
    in Sella and ASE's dimer).

    Cost of the GP (:mod:`mlmd.saddle.gp`): hyperparameters are refitted
    (warm-started, at most ``gp_refit_iterations`` L-BFGS iterations; 60 for
    the first fit) every ``gp_refit_every`` new points, or sooner when the
    GP's energy error at the newest point exceeds ``gp_refit_error_factor`` x
    the median earlier error (0: no error trigger); in between, the Cholesky
    factor grows by block rows when ``gp_incremental``. ``gp_refit_every=1,
    gp_refit_iterations=60, gp_refit_error_factor=0, gp_incremental=False``
    is the policy before issue 17 (a full refit at every outer iteration).

    ``coordinates`` (``p-rfo``, ``gp-p-rfo``): ``internal`` (redundant
    internal coordinates, :mod:`mlmd.saddle.internal`; only for a molecule:
    every atom free, no periodic cell), ``cartesian``, or ``auto`` (internal
    for a molecule, else Cartesian).
    """

    method: str = "auto"
    mode: Union[str, np.ndarray, None] = "random"
    fmax: float = 0.01
    max_calls: int = 200
    fixed: Optional[Sequence[int]] = None
    displace_A: float = 0.0
    displace_atoms: Optional[Sequence[int]] = None
    seed: int = 0
    separation_A: float = 0.01
    max_step_A: Optional[float] = None
    relax: bool = False
    product: Optional[np.ndarray] = None
    device: str = "auto"
    prune: Optional[bool] = None
    prune_size: int = 12
    prune_newest: int = 4
    trust_ratio: float = 0.2
    trust_radius_A: float = 0.2
    trust_min_A: float = 0.1
    trust_max_A: float = 2.0
    initial_rotations: Optional[int] = None
    inner_iterations: int = 100
    pair_cutoff_A: float = 5.0
    min_distance_A: float = 0.5
    min_negative_curvature: float = 1e-3
    max_failures: int = 5
    verify: bool = True
    verify_max_calls: int = 30
    verify_step_A: float = 0.005
    curvature_tolerance: float = 0.01
    bond_factor: float = 1.2
    max_bond_stretch: float = 1.5
    max_barrier_eV: float = 5.0
    max_displacement_A: float = 3.0
    min_mode_overlap: float = 0.3
    connect_tolerance_A: float = 0.2
    gp_refit_every: int = 5
    gp_refit_iterations: int = 10
    gp_refit_error_factor: float = 3.0
    gp_incremental: bool = True
    coordinates: str = "auto"

    def replace(self, **changes) -> "SaddleSettings":
        """A copy with ``changes`` applied (not validated; call :meth:`validate`)."""
        return dataclasses.replace(self, **changes)

    @property
    def mode_is_given(self) -> bool:
        """Whether the mode is an explicit array (trusted) rather than 'random' or 'displacement'."""
        return not (self.mode is None or isinstance(self.mode, str))

    @property
    def rotations_before_first_step(self) -> int:
        """``initial_rotations``, or its default: none for a given mode, 5 for a random or displacement one."""
        if self.initial_rotations is not None:
            return self.initial_rotations
        return 0 if self.mode_is_given else DEFAULT_INITIAL_ROTATIONS

    @property
    def oriented(self) -> bool:
        """Whether the mode's sign matters: with a product the search climbs towards it."""
        return self.product is not None

    def validate(self) -> "SaddleSettings":
        """Check every setting; raise :class:`SettingsError` naming the first bad one. Returns ``self``."""
        from .methods import AUTO, METHODS

        if self.method not in METHODS and self.method != AUTO:
            raise SettingsError(f"unknown method {self.method!r}: use one of {AUTO}, {', '.join(METHODS)}")
        if isinstance(self.mode, str) and self.mode not in MODE_NAMES:
            raise SettingsError(f"unknown mode {self.mode!r}: give an N x 3 array (a file numpy.loadtxt reads), "
                                "'random' or 'displacement'")
        if not _positive(self.fmax) or not _integer(self.max_calls, 3):
            raise SettingsError("fmax must be positive and max_calls at least 3")
        if isinstance(self.mode, str) and self.mode == "displacement" and not _positive(self.displace_A):
            raise SettingsError("mode 'displacement' needs a displacement: give displace_A > 0 (--displace)")
        for name in ("separation_A", "trust_ratio", "trust_radius_A", "trust_min_A", "trust_max_A",
                     "pair_cutoff_A"):
            if not _positive(getattr(self, name)):
                raise SettingsError(f"{name} must be a positive number; got {getattr(self, name)!r}")
        if self.max_step_A is not None and not _positive(self.max_step_A):
            raise SettingsError(f"max_step_A (--max-step) must be a positive length in Å; got {self.max_step_A!r}")
        for name in ("displace_A", "min_distance_A", "min_negative_curvature"):
            if not _real(getattr(self, name)) or getattr(self, name) < 0:
                raise SettingsError(f"{name} must be a number >= 0; got {getattr(self, name)!r}")
        if not self.trust_min_A <= self.trust_radius_A <= self.trust_max_A:
            raise SettingsError(f"the trust radius must lie between its bounds: trust_min_A {self.trust_min_A} <= "
                                f"trust_radius_A {self.trust_radius_A} <= trust_max_A {self.trust_max_A}")
        for name in ("verify_step_A", "curvature_tolerance", "bond_factor", "max_barrier_eV", "max_displacement_A",
                     "connect_tolerance_A"):
            if not _positive(getattr(self, name)):
                raise SettingsError(f"{name} must be a positive number; got {getattr(self, name)!r}")
        if self.product is not None:
            product = np.asarray(self.product, dtype=float)
            if product.ndim != 2 or product.shape[1] != 3 or not np.all(np.isfinite(product)):
                raise SettingsError("product must be the end state's positions, an N x 3 array of finite numbers "
                                    "(Å)")
        if not _real(self.max_bond_stretch) or self.max_bond_stretch < 1:
            raise SettingsError(f"max_bond_stretch must be a number >= 1; got {self.max_bond_stretch!r}")
        if not _real(self.gp_refit_error_factor) or self.gp_refit_error_factor < 0:
            raise SettingsError(f"gp_refit_error_factor must be a number >= 0 (0: no error trigger); "
                                f"got {self.gp_refit_error_factor!r}")
        if not _real(self.min_mode_overlap) or not 0 <= self.min_mode_overlap <= 1:
            raise SettingsError(f"min_mode_overlap must lie in [0, 1]; got {self.min_mode_overlap!r}")
        for name, least in (("prune_size", 1), ("prune_newest", 1), ("inner_iterations", 1), ("seed", 0),
                            ("max_failures", 1), ("verify_max_calls", 1), ("gp_refit_every", 1),
                            ("gp_refit_iterations", 1)):
            if not _integer(getattr(self, name), least):
                raise SettingsError(f"{name} must be an integer >= {least}; got {getattr(self, name)!r}")
        if self.initial_rotations is not None and not _integer(self.initial_rotations, 0):
            raise SettingsError(f"initial_rotations must be an integer >= 0; got {self.initial_rotations!r}")
        if self.coordinates not in COORDINATE_CHOICES:
            raise SettingsError(f"coordinates must be one of {', '.join(COORDINATE_CHOICES)}; "
                                f"got {self.coordinates!r}")
        if not isinstance(self.device, str) or not self.device:
            raise SettingsError(f"device must be 'auto', 'cpu' or 'cuda'; got {self.device!r}")
        from ..model import check_device

        try:
            check_device(self.device, auto=True)
        except MLMDError as exc:
            raise SettingsError(str(exc)) from None
        return self


def _real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value) -> bool:
    return _real(value) and value > 0


def _integer(value, least: int) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= least
