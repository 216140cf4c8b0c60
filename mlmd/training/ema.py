"""Exponential moving average (EMA) of a model's weights: what validation, ``best.pt`` and export use."""

import copy
from typing import Any, Dict


class EMA:
    """Exponential moving average of a module's parameters.

    ``module`` is a copy of the trained model whose parameters are the shadow
    weights; validation and export use it. After ``n`` updates the decay is
    ``min(decay, (1 + n) / (10 + n))`` so that early averages are not dominated
    by the random initial weights. ``decay == 0`` tracks the weights exactly.
    Buffers are copied, not averaged.
    """

    def __init__(self, model, decay: float):
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.updates = 0

    def update(self, model) -> None:
        """One step of the average towards ``model``'s current weights."""
        import torch

        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        with torch.no_grad():
            for shadow, parameter in zip(self.module.parameters(), model.parameters()):
                if decay == 0.0:
                    shadow.copy_(parameter)
                else:
                    shadow.lerp_(parameter.detach(), 1.0 - decay)
            for shadow, buffer in zip(self.module.buffers(), model.buffers()):
                shadow.copy_(buffer)
        self.updates += 1

    def state_dict(self) -> Dict[str, Any]:
        """The averaged weights (the state dict of :attr:`module`)."""
        return self.module.state_dict()
