"""``mlmd demo`` (the shipped models themselves: tests/test_pretrained.py)."""

import mdtraj
import numpy as np
from ase.io import read

import mlmd


def test_demo_runs_ase_openmm_and_batched_replicas(mlmd_cli, tmp_path):
    result = mlmd_cli("demo", "--steps", "40", "--replicas", "3", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "ASE" in result.stdout and "OpenMM" in result.stdout and "3 replicas" in result.stdout
    ase_frames = read(tmp_path / "ase.traj", index=":")
    openmm = mdtraj.load(str(tmp_path / "openmm.dcd"), top=str(tmp_path / "openmm_topology.pdb"))
    replicas = mdtraj.load(str(tmp_path / "replicas.h5"))
    assert len(ase_frames) == openmm.n_frames == replicas.n_frames == 40 // 4 + 1
    assert openmm.n_atoms == 9 and replicas.n_atoms == 27 and replicas.topology.n_chains == 3
    for frame in ase_frames + [openmm.xyz[-1] * 10, replicas.xyz[-1][:9] * 10]:
        positions = frame.positions if hasattr(frame, "positions") else frame
        assert np.isfinite(positions).all()
        # still a molecule: every atom within bonding distance of another one
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1) + 10 * np.eye(9)
        assert distances.min(axis=1).max() < 1.8
    for name in ("openmm.csv", "openmm.png", "replicas.csv", "replicas.png"):
        assert (tmp_path / name).stat().st_size > 0
