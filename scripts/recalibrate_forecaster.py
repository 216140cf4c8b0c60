"""Refit the spread calibration of a stochastic forecaster's ``best.pt`` on its validation pairs, in place.

`mlmd train` calibrates at the end of training; this redoes it for a checkpoint written before the
calibration rule changed (or before there was one), with the training config stored in the checkpoint
(its data must still be where they were). Then export as usual:

    python scripts/recalibrate_forecaster.py training/best.pt
    mlmd export training/best.pt -o forecaster.pt
"""

import argparse

import torch

from mlmd.training.checkpoint import load_checkpoint, save_checkpoint
from mlmd.training.models import build_model
from mlmd.training.objectives import objective_class


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="best.pt of a stochastic forecaster")
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    config = checkpoint["config"]
    objective = objective_class(checkpoint["family"])(config, log=print)
    objective.load()
    dtype = getattr(torch, checkpoint["dtype"])
    model = build_model(checkpoint["family"], checkpoint["model_config"]).to(dtype)
    model.load_state_dict(checkpoint["ema"] if checkpoint.get("kind") == "best" else checkpoint["best_ema"])
    model.eval()
    objective.attach(model)
    batch_size = config["data"]["validation_batch_size"] or config["data"]["batch_size"]
    sums = objective.calibration_sums(model, objective.split.validation.tolist(), batch_size, dtype, "cpu")
    if sums is None:
        parser.error(f"{args.checkpoint} is not a stochastic forecaster: nothing to calibrate")
    checkpoint["model_config"].update(objective.calibrate(model, sums))
    save_checkpoint(checkpoint, args.checkpoint)
    print(f"wrote {args.checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
