"""The contract between accelab and a trainable task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import TensorDataset


@dataclass(frozen=True)
class Splits:
    """Train/validation/test splits. ``test`` is never used for selection."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset


@dataclass(frozen=True)
class Task:
    """A trainable task: data splits, model builders by name, and an example input.

    ``models`` maps a model name to ``builder(**model_args) -> nn.Module``.
    ``load_splits(seed)`` must be deterministic for a given seed.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    load_splits: Callable[[int], Splits]
    models: dict[str, Callable[..., nn.Module]] = field(default_factory=dict)

    def build_model(self, model: str, **model_args) -> nn.Module:
        if model not in self.models:
            raise KeyError(
                f"task {self.name!r} has no model {model!r}; choose from {sorted(self.models)}"
            )
        return self.models[model](**model_args)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.zeros(batch_size, *self.input_shape)
