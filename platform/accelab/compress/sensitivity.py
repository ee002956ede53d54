"""Per-layer sensitivity, and the automatic float fallback it ranks for.

``layer_sensitivity`` compresses one layer at a time (quantized to each bit-width, or
pruned to each sparsity, every other layer left as it is) and asks the caller how much
worse the model got; ``fallback_search`` keeps the most sensitive layers in float, by
bisection over how many, until the caller's measured drop fits a budget. Both take the
evaluation as a function (the validation split, its metric and interval live above this
layer), so they run on any model and any metric.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from accelab.compress.errors import CompressionError
from accelab.compress.prune import apply_unstructured, prunable_layers
from accelab.compress.quant import prepare_fake_quant
from accelab.stats import Estimate

QUANT_BITS = range(2, 9)  # what fake quantization simulates


@dataclass(frozen=True)
class Setting:
    """One way to compress a single layer: ``quant`` to ``value`` bits (weights, symmetric
    per output channel, as ``compress.quant.fake_quant_weight``), or ``prune`` ``value``
    of its weights (smallest magnitude first, within the layer)."""

    kind: Literal["quant", "prune"]
    value: float

    def __post_init__(self) -> None:
        if self.kind == "quant" and self.value not in QUANT_BITS:
            raise CompressionError(f"bits must be an integer in 2..8, got {self.value:g}")
        if self.kind == "prune" and not 0 < self.value < 1:
            raise CompressionError(f"sparsity must be in (0, 1), got {self.value:g}")

    @property
    def label(self) -> str:
        return f"int{int(self.value)}" if self.kind == "quant" else f"sparsity{self.value:g}"


@dataclass(frozen=True)
class Row:
    layer: str
    setting: Setting
    drop: Estimate  # positive: worse than the uncompressed model


def compress_only(model: nn.Module, layer: str, setting: Setting) -> nn.Module:
    """A copy of ``model`` with only ``layer`` compressed as ``setting`` says."""
    model = copy.deepcopy(model).eval()
    others = [name for name, _ in prunable_layers(model) if name != layer]
    if setting.kind == "quant":
        return prepare_fake_quant(model, int(setting.value), exclude=others).eval()
    return apply_unstructured(model, setting.value, "layer", others)


def layer_sensitivity(
    model: nn.Module,
    settings: Sequence[Setting],
    drop_of: Callable[[nn.Module], Estimate],
    layers: Sequence[str] | None = None,
) -> list[Row]:
    """The drop ``drop_of`` measures with each of ``layers`` (default: every Linear/Conv2d)
    compressed alone, for each setting; most sensitive first. ``model`` is not changed."""
    names = [name for name, _ in prunable_layers(model)] if layers is None else list(layers)
    rows = [
        Row(name, setting, drop_of(compress_only(model, name, setting)))
        for setting in settings
        for name in names
    ]
    return sorted(rows, key=lambda r: r.drop.value, reverse=True)


@dataclass
class Fallback:
    """What ``fallback_search`` found: the layers kept in float (most sensitive first),
    the drop measured with them, and every measured step as (layers in float, drop)."""

    float_layers: list[str]
    drop: float
    met: bool
    steps: list[tuple[int, float]] = field(default_factory=list)


def fallback_search(
    ranking: Sequence[str], drop_with_float: Callable[[list[str]], float], budget: float
) -> Fallback:
    """The fewest of ``ranking``'s first layers to keep in float so that
    ``drop_with_float(those layers)`` is at most ``budget``.

    First the fully quantized model; if it misses the budget, bisection over how many
    layers fall back (about log2(n) more measurements instead of up to n one at a time).
    Keeping every layer in float is the dense model (no drop) and is not measured. It
    assumes the drop shrinks as more sensitive layers fall back; where it does not, the
    result still fits the budget, it may just not be the fewest."""
    measured: dict[int, float] = {}

    def drop(k: int) -> float:
        if k not in measured:
            measured[k] = drop_with_float(list(ranking[:k]))
        return measured[k]

    n = len(ranking)
    if drop(0) <= budget:
        return Fallback([], measured[0], True, list(measured.items()))
    failing, passing = 0, n
    while passing - failing > 1:
        mid = (failing + passing) // 2
        if drop(mid) <= budget:
            passing = mid
        else:
            failing = mid
    value = measured.get(passing, 0.0)
    return Fallback(list(ranking[:passing]), value, value <= budget, sorted(measured.items()))
