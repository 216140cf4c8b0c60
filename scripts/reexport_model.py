"""Re-export an mlmd model file with the current model contract, keeping its weights and metadata.

    python scripts/reexport_model.py OLD.pt -o NEW.pt

The family is rebuilt from the ``config`` in the file's metadata, the TorchScript module's weights are
loaded into it (strictly: every tensor must match), and it is exported again. The script checks that the
new file gives the same energies and forces as the old one on a few random geometries before it writes.
Used to bring ``mlmd/pretrained_models/*.pt`` to the contract that takes a carried neighbour list; a fresh
``scripts/train_pretrained.py`` run gives the same result by training.
"""

import argparse
import sys
from pathlib import Path

import torch

from mlmd.model import export_model, load_model
from potentials import FAMILIES


def reexport(source: Path, output: Path, tolerance: float = 1e-6) -> None:
    old = load_model(source, skin_A=0.0)
    metadata = dict(old.metadata)
    family = FAMILIES[metadata["family"]]
    module = family.from_config(metadata.pop("config"))
    # TorchScript's state_dict also lists non-persistent buffers (species table, dtype probe); the family
    # rebuilds those from its config.
    wanted = set(module.state_dict())
    module.load_state_dict({k: v for k, v in old.module.state_dict().items() if k in wanted}, strict=True)
    module = module.to(old.dtype).eval()
    extra = {key: value for key, value in metadata.items()
             if key not in ("family", "species", "cutoff", "dtype", "units", "mlmd_version", "training_data_hash",
                            "kind")}
    generator = torch.Generator().manual_seed(0)
    n = 9
    numbers = torch.tensor([metadata["species"][k % len(metadata["species"])] for k in range(n)])
    checks = []
    for _ in range(3):
        positions = torch.rand(n, 3, generator=generator, dtype=torch.float64) * 3.0
        inputs = (positions, numbers, torch.zeros(1, 3, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.bool),
                  torch.zeros(n, dtype=torch.int64))
        checks.append((inputs, old(*inputs)))
    export_model(module, output, training_data_hash=metadata.get("training_data_hash", ""), **extra)
    new = load_model(output)
    for inputs, before in checks:
        after = new(*inputs)
        for key in ("energy", "forces"):
            error = float((after[key] - before[key]).abs().max())
            if error > tolerance * max(1.0, float(before[key].abs().max())):
                output.unlink()
                sys.exit(f"re-exported {key} differ by {error:.3g}; {output} removed")
    print(f"wrote {output}: {metadata['family']} model, same weights, carried neighbour list: "
          f"{new.neighbors is not None}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    reexport(args.model, args.output)


if __name__ == "__main__":
    main()
