"""Dataset -> model -> MD from the command line, each step a separate `mlmd` process."""

import csv

import numpy as np
from ase.io import read

import mlmd


def test_generate_train_export_md_from_the_command_line(mlmd_cli, tmp_path):
    data = tmp_path / "cu.xyz"
    result = mlmd_cli("generate", "cu", "--frames", "24", "--quiet", "-o", data)
    assert result.returncode == 0, result.stderr
    config = tmp_path / "train.toml"
    config.write_text(f"""
[data]
path = "{data.name}"
batch_size = 4

[model]
family = "equivariant"
cutoff = 4.0
channels = 8
lmax = 1
num_layers = 1

[training]
epochs = 2
dtype = "float64"
num_threads = 1

[output]
directory = "run"
""")
    result = mlmd_cli("train", config, "--quiet")
    assert result.returncode == 0, result.stderr
    result = mlmd_cli("export", tmp_path / "run" / "checkpoint.pt", "-o", tmp_path / "cu.pt")
    assert result.returncode == 0, result.stderr

    model = mlmd.load_model(tmp_path / "cu.pt")
    assert model.family == "equivariant" and model.species == [29] and model.cutoff == 4.0
    structure = read(data, index=0)
    structure.calc = mlmd.MLMDCalculator(model)
    forces = structure.get_forces()
    # A periodic crystal: the forces of a translation-invariant energy sum to zero.
    assert np.isfinite(structure.get_potential_energy()) and np.abs(forces).max() > 1e-3
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-9)

    result = mlmd_cli("md", data, "--frame", "0", "--model", tmp_path / "cu.pt", "--steps", "20", "--stride", "5",
                      "--temperature", "300", "--log", tmp_path / "md.csv", "--trajectory", tmp_path / "md.h5")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "md.csv") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["step", "time_fs", "epot_eV", "ekin_eV", "temperature_K"]
    assert [int(r[0]) for r in rows[1:]] == [0, 5, 10, 15, 20]
    assert np.isfinite(np.array(rows[1:], dtype=float)).all()
