"""Build hooks only (the project is described in pyproject.toml): ship ``mlmd_ase_lookup.pth``.

The ``.pth`` file (source: ``mlmd/ase/mlmd_ase_lookup.pth``; what it does:
``mlmd/ase/lookup.py``) must sit at the root of site-packages, which
pyproject.toml cannot express. Wheels (``pip install .``) get it from
``build_py``, which copies it to the root of the build folder; editable installs
(``pip install -e .``, PEP 660) get it added to the editable wheel after
setuptools has built it, with its line in the wheel's RECORD, so pip installs
and uninstalls it like any other file.
"""

import base64
import hashlib
import os
import zipfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = Path("mlmd", "ase", "mlmd_ase_lookup.pth")


class BuildPyWithPth(build_py):
    """build_py that also puts the .pth file at the root of the build folder (so at the root of the wheel)."""

    def run(self):
        super().run()
        self.copy_file(str(PTH), os.path.join(self.build_lib, PTH.name))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH.name)]

    def get_source_files(self):
        return [*super().get_source_files(), PTH.as_posix()]


def add_to_wheel(wheel: Path, name: str, data: bytes) -> None:
    """Rewrite ``wheel`` with the file ``name`` at its root and the matching RECORD line (PEP 376/427)."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    temporary = wheel.with_name(wheel.name + ".partial")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as target:
        records = [info for info in source.infolist() if info.filename.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise RuntimeError(f"{wheel} has {len(records)} RECORD files; cannot add {name}")
        for info in source.infolist():
            if info is not records[0]:
                target.writestr(info, source.read(info))
        target.writestr(name, data)
        record = source.read(records[0]).decode().rstrip("\n") + f"\n{name},sha256={digest},{len(data)}\n"
        target.writestr(records[0], record)
    os.replace(temporary, wheel)


class EditableWheelWithPth(editable_wheel):
    """editable_wheel whose wheel also carries the .pth file (setuptools' editable finder omits build outputs)."""

    def run(self):
        super().run()
        wheels = list(Path(self.dist_dir).glob("*.editable-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one editable wheel in {self.dist_dir}, found {[w.name for w in wheels]}")
        add_to_wheel(wheels[0], PTH.name, PTH.read_bytes())


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
