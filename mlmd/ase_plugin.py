"""Entry point for ASE's plugin system (group ``ase.plugins``): the calculator named ``mlmd``."""

from ase._4.plugins.plugin import CalculatorPlugin

__ase_plugins__ = {
    CalculatorPlugin(
        "mlmd",
        implementation="mlmd.ase_calculator.MLMDCalculator",
        citation="mlmd: learned interatomic potentials in the MD engines people already use",
    )
}
