"""Per-layer recipes: a mapping from a layer name or an fnmatch pattern to a value, a
bit-width (``compression.quant.layers``, where ``None`` keeps the layer in float) or a
sparsity (``compression.prune.layers``).

One resolution rule for every runtime (torch fake-quant, torch int8 kernels, the ONNX
Runtime quantizer, the pruners), so a recipe means the same layers wherever it runs: an
exact name wins over patterns; otherwise the first pattern that matches, in the mapping's
order; otherwise the global value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TypeVar

Recipe = Mapping[str, int | None]
V = TypeVar("V")


def value_of(name: str, default: V, recipe: Mapping[str, V]) -> V:
    """The value of layer ``name`` under ``recipe`` (bits, None: float; or a sparsity)."""
    if name in recipe:
        return recipe[name]
    for pattern, bits in recipe.items():
        if fnmatchcase(name, pattern):
            return bits
    return default


def resolve(names: Iterable[str], default: V, recipe: Mapping[str, V]) -> dict[str, V]:
    """Every layer's value, in the order of ``names``."""
    return {name: value_of(name, default, recipe) for name in names}


def float_layers(names: Iterable[str], recipe: Recipe) -> list[str]:
    """The layers of ``names`` the recipe keeps in float."""
    return [name for name, bits in resolve(names, 0, recipe).items() if bits is None]


def float_name(recipe: Recipe) -> str:
    """``float-<keys>`` naming the keys ``recipe`` keeps in float (``+``-joined, in order),
    or "" where it keeps none: the part of a backend's name that says the model is mixed."""
    kept = [key for key, bits in recipe.items() if bits is None]
    return "float-" + "+".join(kept) if kept else ""


def unmatched(names: Sequence[str], recipe: Mapping[str, object]) -> list[str]:
    """Keys of ``recipe`` that name no layer and match none (a typo would silently do nothing)."""
    return [key for key in recipe if not any(fnmatchcase(n, key) for n in names)]


def with_float(recipe: Recipe, layers: Iterable[str]) -> dict[str, int | None]:
    """``recipe`` with ``layers`` kept in float (exact names: they win over any pattern)."""
    return {**recipe, **{name: None for name in layers}}
