"""``mlmd export``: a training checkpoint's EMA weights written as a model file (:mod:`mlmd.model`)."""

import os
from typing import Any, Union

from ..errors import MLMDError
from .checkpoint import load_checkpoint
from .models import build_model, default_dtype


def export_checkpoint(checkpoint: Union[str, os.PathLike], output: Union[str, os.PathLike], best: bool = False,
                      overwrite: bool = False, **metadata: Any):
    """Write the EMA weights of a training checkpoint (``best``: those of the best
    validation epoch) as an exported model file; returns its path. ``metadata``
    goes into the model file's metadata beside the standard keys. An existing
    ``output`` is replaced only with ``overwrite`` (checked before any work)."""
    import torch

    from ..io import check_destination
    from ..model import export_model

    check_destination(output, "model file", overwrite)

    data = load_checkpoint(checkpoint)
    if best and data.get("kind") != "best":
        weights = data.get("best_ema")
        if weights is None:
            raise MLMDError(f"checkpoint {checkpoint} has no best weights yet (no epoch finished); "
                            "export without --best")
        epoch = data["best_epoch"]
    else:
        weights, epoch = data["ema"], data["epoch"]
    dtype = getattr(torch, data["dtype"])
    with default_dtype(dtype):
        module = build_model(data["family"], data["model_config"])
    module = module.to(dtype)
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise MLMDError(f"the weights in {checkpoint} do not fit model family {data['family']!r} as installed "
                        f"({str(exc).splitlines()[0]}); use the mlmd version that wrote it") from exc
    module.eval()
    training = {"epoch": int(epoch), "weights": "best EMA" if (best or data.get("kind") == "best") else "EMA"}
    return export_model(module, output, training_data_hash=data["data_hash"], training=training, **metadata)
