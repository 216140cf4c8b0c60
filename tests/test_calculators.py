"""mlmd's GFN2-xTB calculator survives the tblite failure that used to abort the whole process.

The four geometries are consecutive force calls of a GP-dimer search on malonaldehyde (an OH group pulled
3 Å out). With tblite's own ASE calculator (0.8; ``replay("tblite")``) the second fails its SCF, the third
fails in the eigensolver ("sygvd failed") and the fourth aborts Python with a Fortran runtime error
(DEALLOCATE of an unallocated result), which killed ``scripts/evaluate_saddle.py``. The calls run in a child
process, so the test reports an abort instead of dying with it.
"""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tblite")

NUMBERS = [6, 6, 6, 8, 8, 1, 1, 1, 1]
GEOMETRIES_A = [
    [[-1.1308239148424084, 0.14662028793160878, 0.049266474591043774],
     [-0.00952495332789105, -0.49799996874151387, 0.07431394368307119],
     [1.3907748867580778, 0.10775777714115269, -0.0460813946740192],
     [-2.3105767277776095, 3.445121575821159, -0.1907521726242532],
     [1.6482573080731822, 1.1980233601385308, -0.13089801897401743],
     [-1.3945924333697035, 3.5623724219472983, 0.04203376485207019],
     [0.005919825520966075, -1.5757065409333983, 0.18587506273730042],
     [-1.983473700132341, 0.7653922769130682, 0.013770988717880985],
     [2.1572352418781957, -0.7207180123396936, -0.03582611037962705]],
    [[-1.1549544252403292, 0.05656339073074923, 0.060694332004044095],
     [-0.03553969902892891, -0.5643754256670682, 0.08031135557297821],
     [1.3535831588093328, 0.06638887132448969, -0.04351454597863607],
     [-2.357850745982131, 3.440302390873482, -0.170729450391479],
     [1.5888351457186318, 1.2050232344432024, -0.12462497476960091],
     [-1.4449337168014136, 3.6687236281363393, 0.020742468200785805],
     [0.0587016806196115, -1.666659666170978, 0.19476282871597062],
     [-1.7585863857451587, 0.9264678597296974, -0.016622462455476262],
     [2.1120230734437873, -0.701821567958021, -0.039256445217232004]],
    [[-1.1188726031023803, 0.13750797433497175, 0.04978716284329688],
     [-0.022681000251141704, -0.4913575800042881, 0.07412367801047422],
     [1.37832598693926, 0.03617898367526094, -0.04080004604922822],
     [-2.3127345687250846, 3.4421210205629205, -0.19106190561101918],
     [1.663672763584249, 1.2677169295138473, -0.1361920133129544],
     [-1.39209588656554, 3.5639408936045456, 0.04252416062432704],
     [0.0069569681220073825, -1.5766708322823837, 0.1859500528859822],
     [-1.9834299206162287, 0.7696135639626724, 0.013241122372737432],
     [2.1540125403558843, -0.7181886424818014, -0.035869464174844]],
    [[-1.1240140547421413, 0.14105127851476412, 0.04960471359799423],
     [-0.016662063776520214, -0.4947881303692526, 0.07425150257541885],
     [1.3838292137770691, 0.06787058499724241, -0.04313757958372247],
     [-2.312462976281004, 3.445253957267822, -0.19099206215747577],
     [1.6566498948640158, 1.2364427224262107, -0.13382106974341537],
     [-1.3936155328809028, 3.563382423658983, 0.04223402555321759],
     [0.006770320436106662, -1.5766488462537478, 0.18595071180363087],
     [-1.9828462519574546, 0.7676886407161004, 0.013461947889841636],
     [2.155442738503272, -0.7193916439364021, -0.035849122205026826]],
]

CHILD = textwrap.dedent("""
    import sys
    from ase import Atoms
    from ase.calculators.calculator import CalculationFailed
    import mlmd.calculators as calculators
    if sys.argv[1] == "tblite":
        calculators._restartable = lambda cls: cls  # tblite's calculator as shipped
    numbers, geometries = eval(sys.stdin.read())
    atoms = Atoms(numbers=numbers, positions=geometries[0])
    atoms.calc = calculators.get_calculator("gfn2")
    for positions in geometries:
        atoms.positions = positions
        try:
            print("energy", atoms.get_potential_energy(), flush=True)
        except CalculationFailed as exc:
            print("failed", str(exc)[:60], flush=True)
""")


def replay(which: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, which], input=repr((NUMBERS, GEOMETRIES_A)),
                          capture_output=True, text=True, timeout=300)


def test_a_failed_calculation_does_not_abort_the_next():
    done = replay("mlmd")
    assert done.returncode == 0, f"the process died: {done.stderr[-300:]}"
    lines = done.stdout.split("\n")
    assert len([line for line in lines if line.startswith(("energy", "failed"))]) == 4, done.stdout
    # a fresh calculator on the last geometry gives the same answer as the reused one
    fresh = subprocess.run([sys.executable, "-c", CHILD, "mlmd"], input=repr((NUMBERS, GEOMETRIES_A[3:])),
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-300:]
    assert lines[3].split()[0] == fresh.stdout.split()[0]
