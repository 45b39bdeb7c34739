"""Building blocks every network of the package shares: seeded initialisation, the MLP head, and
the SGD optimiser with its learning-rate schedule (the classifier head, CORES and the from-scratch
networks all train with it)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

SCHEDULES = ("cosine", "multistep", "constant")


def mlp_head(in_dim: int, num_classes: int, hidden: int, generator: torch.Generator) -> nn.Sequential:
    """Two hidden layers of ``hidden`` units with ReLU (paper Table 5), initialised from ``generator``."""
    head = nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )
    init_parameters(head, generator)
    return head


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialisation of linear, convolution and norm layers, drawn from
    ``generator`` instead of the global RNG (runs are seeded, never the process)."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                if layer.bias is not None:
                    fan_in = layer.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
            elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and layer.affine:
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)


def make_sgd(
    parameters: Iterable[torch.nn.Parameter], lr: float, momentum: float, weight_decay: float, schedule: str, epochs: int
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LRScheduler]:
    """SGD and its schedule, stepped once per epoch: ``cosine`` annealing to 0 over ``epochs``,
    ``multistep`` (x0.1 at 50% and 75% of the epochs, the paper's from-scratch setting) or
    ``constant``."""
    optimiser = torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if schedule == "cosine":
        return optimiser, torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    if schedule == "multistep":
        milestones = sorted({max(1, int(epochs * 0.5)), max(1, int(epochs * 0.75))})
        return optimiser, torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones, 0.1)
    if schedule == "constant":
        return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, lambda epoch: 1.0)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
