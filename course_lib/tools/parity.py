"""Step-for-step comparison of the scratch optimizers with torch.optim.

Run ``python -m course_lib.tools.parity`` for the table of max differences.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import course_lib.optim as scratch

CONFIGS: dict[str, list[dict]] = {
    "SGD": [
        {"lr": 0.05},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 1e-2},
        {"lr": 0.05, "momentum": 0.9, "maximize": True},
    ],
    "Adagrad": [
        {},
        {"lr": 0.05, "lr_decay": 1e-2, "weight_decay": 1e-3},
        {"lr": 0.05, "initial_accumulator_value": 0.1, "eps": 1e-6},
    ],
    "RMSprop": [
        {"lr": 1e-3},
        {"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-3},
        {"lr": 1e-3, "centered": True, "alpha": 0.9},
        {"lr": 1e-3, "centered": True, "momentum": 0.5, "eps": 1e-6},
    ],
    "Adadelta": [{}, {"lr": 0.5, "rho": 0.95, "weight_decay": 1e-2}, {"eps": 1e-4}],
    "Adam": [
        {},
        {"lr": 1e-2, "weight_decay": 1e-2},
        {"lr": 1e-2, "amsgrad": True},
        {"lr": 1e-2, "betas": (0.8, 0.99), "decoupled_weight_decay": True, "weight_decay": 0.1},
    ],
    "AdamW": [{}, {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}],
    "Adamax": [{}, {"lr": 1e-2, "weight_decay": 1e-2, "betas": (0.8, 0.99)}],
    "NAdam": [
        {},
        {"lr": 1e-2, "momentum_decay": 1e-2, "weight_decay": 1e-2},
        {"lr": 1e-2, "decoupled_weight_decay": True, "weight_decay": 0.1},
    ],
}


def _model_and_data(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    inputs = torch.randn(64, 8, generator=generator)
    targets = torch.randint(0, 3, (64,), generator=generator)
    return model, inputs, targets


def _param_groups(model: nn.Module, second_group: dict | None) -> list:
    if second_group is None:
        return list(model.parameters())
    first, second = model[0], model[2]
    return [{"params": first.parameters()}, {"params": second.parameters(), **second_group}]


def max_parameter_difference(
    name: str,
    kwargs: dict,
    *,
    steps: int = 200,
    second_group: dict | None = None,
    scratch_class: type | None = None,
) -> float:
    """Train two copies of one model, with ours and torch's ``name``; return the max |difference|."""
    ours_model, inputs, targets = _model_and_data()
    torch_model = copy.deepcopy(ours_model)
    ours = (scratch_class or getattr(scratch, name))(
        _param_groups(ours_model, second_group), **kwargs
    )
    reference = getattr(torch.optim, name)(
        _param_groups(torch_model, second_group), foreach=False, **kwargs
    )
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        for model, optimizer in ((ours_model, ours), (torch_model, reference)):
            optimizer.zero_grad()
            loss_fn(model(inputs), targets).backward()
            optimizer.step()
    return max(
        (a - b).abs().max().item()
        for a, b in zip(ours_model.parameters(), torch_model.parameters(), strict=True)
    )


def parity_table(steps: int = 200) -> list[tuple[str, int, float]]:
    """(optimizer, number of settings, worst max abs difference over them)."""
    return [
        (
            name,
            len(settings),
            max(max_parameter_difference(name, kw, steps=steps) for kw in settings),
        )
        for name, settings in CONFIGS.items()
    ]


if __name__ == "__main__":
    print(f"{'optimizer':<10} {'settings':>8}  max |ours - torch.optim| after 200 float32 steps")
    for name, count, difference in parity_table():
        print(f"{name:<10} {count:>8}  {difference:.3g}")
