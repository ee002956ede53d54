"""The contract between accelab and a trainable task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from trainables.splits import examples_of  # noqa: F401  (its home before Ray Data splits)


@dataclass(frozen=True)
class Splits:
    """Train/validation/test splits. ``test`` is never used for selection.

    Each is a map-style torch ``Dataset`` of (input, label) pairs: a ``TensorDataset`` held
    in memory, or one that reads its examples lazily (from files, one ``__getitem__`` at a
    time) for data larger than memory: training samples it per worker
    (``DistributedSampler``), evaluation and calibration read it batch by batch. Or, for a
    task with ``ray_data=True``, a ``ray.data.Dataset`` with columns ``x`` and ``y``: Ray
    Train shards the train split across workers; see ``trainables.splits``."""

    train: Dataset | Any
    val: Dataset | Any
    test: Dataset | Any


@dataclass(frozen=True)
class Metric:
    """A task's quality metric, computed from one number per example.

    ``kind="proportion"``: per-example values are 0/1 (correct or not), the metric is their
    mean (accuracy). ``kind="mean"``: per-example values are real (e.g. a sequence's mean
    token loss); the metric is ``transform(mean)``, e.g. ``exp`` for perplexity.
    """

    name: str = "accuracy"
    higher_is_better: bool = True
    kind: Literal["proportion", "mean"] = "proportion"
    transform: Literal["identity", "exp"] = "identity"
    unit: str = "fraction"


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over every position: (B, C) vs (B,) or (B, T, V) vs (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def correct_per_example(logits: Tensor, y: Tensor) -> Tensor:
    """1.0 where the arg-max class is the label (classification accuracy per example)."""
    return (logits.argmax(dim=-1) == y).float()


@dataclass(frozen=True)
class Task:
    """A trainable task: data splits, model builders by name, an example input, and how
    the model is trained (``loss``) and judged (``metric`` from ``per_example``).

    ``models`` maps a model name to ``builder(**model_args) -> nn.Module``.
    ``load_splits(seed)`` must be deterministic for a given seed.
    ``describe_data(seed)`` returns what the data was (for MLflow), e.g. a hash.
    ``input_shape`` excludes the batch dimension; inputs are ``input_dtype`` (token ids
    for a language model).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    load_splits: Callable[[int], Splits]
    models: dict[str, Callable[..., nn.Module]] = field(default_factory=dict)
    metric: Metric = Metric()
    loss: Callable[[Tensor, Tensor], Tensor] = cross_entropy
    per_example: Callable[[Tensor, Tensor], Tensor] = correct_per_example
    input_dtype: torch.dtype = torch.float32
    describe_data: Callable[[int], dict[str, Any]] | None = None
    # more per-example metrics reported next to ``metric`` (e.g. next-token accuracy)
    secondary: dict[str, Callable[[Tensor, Tensor], Tensor]] = field(default_factory=dict)
    generates: bool = False  # a language model: per-token generation latency is measured
    # structured pruning may remove output channels only of layers named ``*<suffix>``
    # (e.g. a transformer's MLP "fc1": hidden units); empty = any layer but the output one
    structured_only: tuple[str, ...] = ()
    # what the model's input is and how raw data becomes it (shown with every served model:
    # the MLflow Model's metadata and the registered version's description)
    input_description: str = ""
    # ``load_splits`` returns Ray Data datasets: the driver hands them to Ray Train, which
    # streams each worker its shard of the train split (``trainables.splits``)
    ray_data: bool = False

    def build_model(self, model: str, **model_args) -> nn.Module:
        if model not in self.models:
            raise KeyError(
                f"task {self.name!r} has no model {model!r}; choose from {sorted(self.models)}"
            )
        return self.models[model](**model_args)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.zeros(batch_size, *self.input_shape, dtype=self.input_dtype)
