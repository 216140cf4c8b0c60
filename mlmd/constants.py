"""Physical constants and unit conversions: the only place a conversion factor is written.

Internal units are eV, Å, fs, amu and K. Values are CODATA 2018 (the SI
defining constants are exact; the atomic mass constant is measured).
OpenMM works in nm, ps, kJ/mol and amu (dalton); convert at its boundary only.
"""

# SI defining constants (exact).
ELEMENTARY_CHARGE_C = 1.602176634e-19
BOLTZMANN_J_PER_K = 1.380649e-23
AVOGADRO_PER_MOL = 6.02214076e23
# CODATA 2018 atomic mass constant.
AMU_KG = 1.66053906660e-27
# CODATA 2018 Hartree energy and Bohr radius, for quantum-chemistry codes.
HARTREE_EV = 27.211386245988
BOHR_ANGSTROM = 0.529177210903

ANGSTROM_M = 1e-10
FS_S = 1e-15

#: Boltzmann constant in eV/K.
KB_EV_PER_K = BOLTZMANN_J_PER_K / ELEMENTARY_CHARGE_C

#: 1 amu·Å²/fs² expressed in eV (kinetic energy of masses in amu, velocities in Å/fs).
AMU_A2_PER_FS2_EV = AMU_KG * ANGSTROM_M**2 / FS_S**2 / ELEMENTARY_CHARGE_C
#: Acceleration in Å/fs² produced by a force of 1 eV/Å on a mass of 1 amu.
EV_PER_A_AMU_TO_A_PER_FS2 = 1.0 / AMU_A2_PER_FS2_EV

#: OpenMM boundary conversions.
NM_ANGSTROM = 10.0
ANGSTROM_NM = 0.1
PS_FS = 1000.0
FS_PS = 1e-3
EV_KJ_PER_MOL = ELEMENTARY_CHARGE_C * AVOGADRO_PER_MOL / 1000.0
KJ_PER_MOL_EV = 1.0 / EV_KJ_PER_MOL
#: Forces: 1 eV/Å in kJ/mol/nm.
EV_PER_A_KJ_PER_MOL_NM = EV_KJ_PER_MOL * NM_ANGSTROM
#: Velocities: 1 Å/fs in nm/ps.
A_PER_FS_NM_PER_PS = ANGSTROM_NM / FS_PS

#: Stress: 1 eV/Å³ in GPa.
EV_PER_A3_GPA = ELEMENTARY_CHARGE_C / ANGSTROM_M**3 / 1e9

#: Simulation speed: femtoseconds per nanosecond and seconds per day (for ns/day).
FS_NS = 1e-6
SECONDS_PER_DAY = 86400.0

# The AKMA time unit (CHARMM, and DCD headers as MDAnalysis reads them): Å·sqrt(amu/(kcal/mol)) with the
# thermochemical kcal (4184 J), about 48.888 fs.
AKMA_FS = ANGSTROM_M * (AMU_KG * AVOGADRO_PER_MOL / 4184.0) ** 0.5 / FS_S
