"""Reference calculators by name: ``emt``, ``lj``, ``morse``, ``gfn2`` and any ASE calculator.

Every command that takes ``--calculator NAME`` resolves the name here, so a
new reference potential is one :func:`register_calculator` away. Names not in
the registry fall back to ASE's own calculator registry.
"""

from typing import Callable, Dict

from .errors import MLMDError

CALCULATORS: Dict[str, Callable[[], object]] = {}


def register_calculator(name: str):
    """Decorator: ``factory() -> ase.Calculator`` becomes available as ``name``."""

    def decorate(factory):
        CALCULATORS[name] = factory
        return factory

    return decorate


@register_calculator("emt")
def _emt():
    from ase.calculators.emt import EMT

    return EMT()


@register_calculator("lj")
def _lennard_jones():
    """Lennard-Jones with argon parameters (sigma 3.405 Å, epsilon 10.3 meV), smoothly cut at 8.5 Å."""
    from ase.calculators.lj import LennardJones

    return LennardJones(sigma=3.405, epsilon=0.0103, rc=8.5, ro=7.5, smooth=True)


@register_calculator("morse")
def _morse():
    from ase.calculators.morse import MorsePotential

    return MorsePotential()


@register_calculator("gfn2")
def _gfn2():
    try:
        from tblite.ase import TBLite
    except ImportError as exc:
        raise MLMDError(
            "the gfn2 calculator needs the tblite package; install it with `pip install tblite`"
        ) from exc
    _limit_xtb_threads()
    # accuracy=0.01 converges the SCC tightly enough that labels do not depend on
    # the previous step's wavefunction (forces reproducible to ~1e-5 eV/Å).
    return _restartable(TBLite)(method="GFN2-xTB", verbosity=0, accuracy=0.01)


def _restartable(tblite_class):
    """``tblite_class`` that forgets its previous result after a failed calculation.

    tblite reuses the last result as the next call's start. After some failures
    (the eigensolver's "sygvd failed", seen after a long saddle-search step) that
    result is left half freed, and the next call aborts the whole Python process
    with a Fortran runtime error. Dropping it costs one SCF from scratch.
    """
    from ase.calculators.calculator import CalculationFailed

    class RestartableTBLite(tblite_class):
        def calculate(self, *args, **kwargs):
            try:
                super().calculate(*args, **kwargs)
            except CalculationFailed:
                self._xtb, self._res = None, None
                raise

    return RestartableTBLite


def _limit_xtb_threads() -> None:
    """Run tblite's OpenMP runtime on ``MLMD_XTB_THREADS`` threads (default 1).

    tblite spin-waits in OpenMP; on the small molecules we label, a second
    thread gains nothing, and with any other process busy on the cores one call
    of ethanol took 55 ms instead of 4 ms here. ``OMP_NUM_THREADS`` cannot
    help once torch has started its own runtime, so set it through libgomp.
    """
    import ctypes
    import ctypes.util
    import os

    threads = int(os.environ.get("MLMD_XTB_THREADS", "1"))
    library = ctypes.util.find_library("gomp")
    if library is None:
        return  # tblite built without GNU OpenMP: nothing to limit
    ctypes.CDLL(library).omp_set_num_threads(threads)


def get_calculator(name: str):
    """Return a fresh ASE calculator for ``name``."""
    key = name.lower()
    if key in CALCULATORS:
        return CALCULATORS[key]()
    from ase.calculators.calculator import get_calculator_class

    try:
        cls = get_calculator_class(key)
    except Exception as exc:  # ASE raises several types for an unknown or uninstalled calculator
        known = ", ".join(sorted(CALCULATORS))
        raise MLMDError(
            f"unknown calculator {name!r}: use one of {known} or the name of a calculator "
            f"registered with ASE ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        return cls()
    except Exception as exc:  # third-party constructors can fail in many ways
        raise MLMDError(f"ASE calculator {name!r} could not be created: {exc}") from exc
