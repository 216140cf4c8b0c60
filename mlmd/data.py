"""Datasets: extended XYZ frames to batches in the model contract.

A :class:`Dataset` holds labelled ASE frames, checked once on loading. It
gives deterministic train/validation/test splits, per-element reference
energies by least squares, the statistics a model needs (average neighbour
count, force RMS) and batches of tensors:

    positions [N,3] Å, atomic_numbers [N], cell [B,3,3] Å, pbc [B,3], batch [N],
    energy [B] eV, forces [N,3] eV/Å, stress [B,3,3] eV/Å³, has_stress [B]
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .checks import check_atoms
from .errors import InputFileError
from .io import PathLike, read_frames


def _frame_labels(atoms, where: str, require: Sequence[str]) -> Dict[str, np.ndarray]:
    """Reference labels stored with a frame (by ASE's extxyz reader), checked for presence and finiteness."""
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    labels: Dict[str, np.ndarray] = {}
    for key in ("energy", "forces", "stress"):
        if key in results:
            labels[key] = np.asarray(results[key], dtype=float)
        elif key in atoms.info:
            labels[key] = np.asarray(atoms.info[key], dtype=float)
        elif key in atoms.arrays:
            labels[key] = np.asarray(atoms.arrays[key], dtype=float)
    for key in require:
        if key not in labels:
            raise InputFileError(
                f"{where} has no {key}; a training dataset needs {' and '.join(require)} for every frame "
                "(write them with `mlmd generate` or ASE's extxyz writer from a calculator)"
            )
    for key, value in labels.items():
        if not np.all(np.isfinite(value)):
            raise InputFileError(f"{where}: the {key} contains NaN or infinite values; remove or relabel the frame")
    if "forces" in labels and labels["forces"].shape != (len(atoms), 3):
        raise InputFileError(f"{where}: forces have shape {labels['forces'].shape}, expected ({len(atoms)}, 3)")
    if "stress" in labels:
        stress = labels["stress"]
        if stress.shape == (6,):
            from ase.stress import voigt_6_to_full_3x3_stress

            labels["stress"] = voigt_6_to_full_3x3_stress(stress)
        elif stress.shape != (3, 3):
            raise InputFileError(f"{where}: stress has shape {stress.shape}, expected (6,) or (3, 3)")
    return labels


@dataclass
class Split:
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


class Dataset:
    """Labelled frames with the bookkeeping a trainer needs."""

    def __init__(self, frames: List, source: str = "dataset", require: Sequence[str] = ("energy", "forces"),
                 content_hash: Optional[str] = None):
        if len(frames) == 0:
            raise InputFileError(f"{source} contains no frames")
        self.frames = frames
        self.source = source
        self.labels = []
        for index, atoms in enumerate(frames):
            where = f"{source}, frame {index}"
            check_atoms(atoms, source=where)
            self.labels.append(_frame_labels(atoms, where, require))
        self.species: List[int] = sorted({int(z) for atoms in frames for z in atoms.numbers})
        self.hash = content_hash or self._hash_frames()

    @classmethod
    def from_file(cls, path: PathLike, require: Sequence[str] = ("energy", "forces")) -> "Dataset":
        """Read every frame of an extended XYZ (or any ASE-readable) file."""
        frames = read_frames(path, index=":", what="dataset")
        content_hash = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return cls(frames, source=str(path), require=require, content_hash=content_hash)

    def _hash_frames(self) -> str:
        digest = hashlib.sha256()
        for atoms, labels in zip(self.frames, self.labels):
            digest.update(atoms.numbers.tobytes())
            digest.update(np.ascontiguousarray(atoms.positions).tobytes())
            for key in sorted(labels):
                digest.update(np.ascontiguousarray(labels[key]).tobytes())
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.frames)

    def split(self, validation: float = 0.1, test: float = 0.1, seed: int = 0) -> Split:
        """Deterministic random split: the same seed and size give the same indices."""
        if validation < 0 or test < 0 or validation + test >= 1:
            raise ValueError("validation and test fractions must be non-negative and sum to less than 1")
        order = np.random.default_rng(seed).permutation(len(self))
        n_test = int(round(test * len(self)))
        n_validation = int(round(validation * len(self)))
        return Split(
            train=np.sort(order[n_test + n_validation:]),
            validation=np.sort(order[n_test:n_test + n_validation]),
            test=np.sort(order[:n_test]),
        )

    def reference_energies(self, indices: Optional[Sequence[int]] = None) -> Dict[int, float]:
        """Per-element energies ``e_Z`` (eV) minimising ``sum_frames (E - sum_i e_Z(i))^2``.

        With a single composition (one molecule) the system is rank deficient;
        the minimum-norm solution is returned, which still removes the mean energy.
        """
        indices = range(len(self)) if indices is None else indices
        column = {z: k for k, z in enumerate(self.species)}
        counts = np.zeros((len(indices), len(self.species)))
        energies = np.zeros(len(indices))
        for row, index in enumerate(indices):
            for z in self.frames[index].numbers:
                counts[row, column[int(z)]] += 1
            energies[row] = float(self.labels[index]["energy"])
        solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
        return {z: float(solution[column[z]]) for z in self.species}

    def statistics(self, cutoff: float, indices: Optional[Sequence[int]] = None) -> Dict[str, float]:
        """Average number of neighbours within ``cutoff``, force RMS (eV/Å) and the RMS of
        the per-atom energy left after the reference energies (eV/atom)."""
        import torch

        from potentials.neighbors import neighbor_list

        indices = list(range(len(self))) if indices is None else list(indices)
        references = self.reference_energies(indices)
        n_edges = 0
        n_atoms = 0
        force_squares = 0.0
        residuals = []
        for index in indices:
            atoms = self.frames[index]
            edge_index, _ = neighbor_list(
                torch.tensor(atoms.positions),
                torch.tensor(atoms.cell.array).unsqueeze(0),
                torch.tensor(atoms.pbc).unsqueeze(0),
                torch.zeros(len(atoms), dtype=torch.int64),
                cutoff,
            )
            n_edges += edge_index.shape[1]
            n_atoms += len(atoms)
            force_squares += float((self.labels[index]["forces"] ** 2).sum())
            reference = sum(references[int(z)] for z in atoms.numbers)
            residuals.append((float(self.labels[index]["energy"]) - reference) / len(atoms))
        return {
            "avg_num_neighbors": n_edges / n_atoms,
            "force_rms": float(np.sqrt(force_squares / (3 * n_atoms))),
            "energy_per_atom_rms": float(np.sqrt(np.mean(np.square(residuals)))),
            "n_frames": float(len(indices)),
            "n_atoms": float(n_atoms),
        }

    def collate(self, indices: Sequence[int], dtype=None) -> Dict[str, "torch.Tensor"]:
        """Batch the frames at ``indices`` into tensors of the model contract."""
        import torch

        dtype = dtype or torch.get_default_dtype()
        frames = [self.frames[i] for i in indices]
        labels = [self.labels[i] for i in indices]
        sizes = [len(atoms) for atoms in frames]
        stress = [lab.get("stress", np.zeros((3, 3))) for lab in labels]
        return {
            "positions": torch.tensor(np.concatenate([a.positions for a in frames]), dtype=dtype),
            "atomic_numbers": torch.tensor(np.concatenate([a.numbers for a in frames]), dtype=torch.int64),
            "cell": torch.tensor(np.stack([a.cell.array for a in frames]), dtype=dtype),
            "pbc": torch.tensor(np.stack([a.pbc for a in frames]), dtype=torch.bool),
            "batch": torch.repeat_interleave(torch.arange(len(frames)), torch.tensor(sizes)),
            "energy": torch.tensor([float(lab["energy"]) for lab in labels], dtype=dtype),
            "forces": torch.tensor(np.concatenate([lab["forces"] for lab in labels]), dtype=dtype),
            "stress": torch.tensor(np.stack(stress), dtype=dtype),
            "has_stress": torch.tensor(["stress" in lab for lab in labels], dtype=torch.bool),
            "n_atoms": torch.tensor(sizes, dtype=torch.int64),
        }

    def batches(self, indices: Sequence[int], batch_size: int, shuffle: bool = False,
                seed: int = 0, dtype=None) -> Iterator[Dict[str, "torch.Tensor"]]:
        """Yield collated batches of at most ``batch_size`` frames."""
        indices = np.asarray(indices)
        if shuffle:
            indices = np.random.default_rng(seed).permutation(indices)
        for start in range(0, len(indices), batch_size):
            yield self.collate(indices[start:start + batch_size].tolist(), dtype=dtype)


def load_dataset(path: PathLike, require: Tuple[str, ...] = ("energy", "forces")) -> Dataset:
    """Read and check a labelled dataset file."""
    return Dataset.from_file(path, require=require)
