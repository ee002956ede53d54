"""Attention-head pruning: remove whole heads from the q/k/v and output projections.

The model really shrinks: each attention layer's projections are replaced by narrower
ones holding only the kept heads' rows (q/k/v outputs) and columns (output-projection
inputs), and the layer's head count follows. Removing a head gives exactly the output of
the unpruned layer with that head's output-projection slice zeroed (its contribution).

Which heads go: per attention layer, the ``round(fraction * heads)`` heads with the
smallest score ``||O_h||_F * ||V_h||_F``. A head adds ``O_h (A_h X V_h)`` to the residual
stream with ``A_h`` row-stochastic (softmax), so its output is bounded by that product
times the input's size; q and k only choose where it looks. The score is data-free and
deterministic: every DDP rank, restarted worker and sweep trial removes the same heads
from the same dense weights without a pass over data (a Taylor/gradient score would see
the data, at the price of batches and a backward pass in every worker).

Architectures are recognised by their attributes (small adapters, no model imports):

    separate projections   pylm ``q k v o``; Hugging Face Llama-style ``q_proj k_proj
                           v_proj o_proj`` (with grouped-query attention a prunable unit is
                           one key/value head together with the query heads that share it)
    fused GPT-2 ``Conv1D`` ``c_attn`` (q|k|v) and ``c_proj``, ``num_heads``/``split_size``
                           (ViT in transformers 5 too)
    nested                 BERT/RoBERTa-style ``self.query key value`` (with
                           ``attention_head_size``) and the sibling ``output.dense``

Every adapter reads the head count off the widths or updates it, so a model rebuilt with
``resize_heads`` (the deployable loader) has the pruned shapes before its weights load.
A Hugging Face Llama-style config follows too (``sync_config``), where it can say it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from accelab.compress.errors import CompressionError


def _rows(kept: Tensor, width: int) -> Tensor:
    """Feature indices of the kept units, each ``width`` contiguous features."""
    return (kept[:, None] * width + torch.arange(width, device=kept.device)).reshape(-1)


def _unit_norms(weight: Tensor, units: int, dim: int) -> Tensor:
    """Frobenius norm of each unit's slice along ``dim`` (units are contiguous there)."""
    w = weight.detach().float()
    return (w.t() if dim else w).reshape(units, -1).norm(dim=1)


def _narrow_linear(layer: nn.Linear, idx: Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``idx`` of its outputs (``dim`` 0) or inputs (``dim`` 1)."""
    w = layer.weight.detach().index_select(dim, idx.to(layer.weight.device))
    bias = layer.bias is not None
    new = nn.Linear(w.shape[1], w.shape[0], bias=bias, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if bias:
            new.bias.copy_(layer.bias if dim == 1 else layer.bias[idx.to(layer.bias.device)])
    return new.train(layer.training)


def _narrow_conv1d(layer: nn.Module, idx: Tensor, dim: int) -> None:
    """Hugging Face ``Conv1D`` (weight ``(in, out)``): keep ``idx`` of its inputs (``dim``
    0) or outputs (``dim`` 1), in place."""
    idx = idx.to(layer.weight.device)
    layer.weight = nn.Parameter(layer.weight.detach().index_select(dim, idx).clone())
    if dim == 1:
        layer.bias = nn.Parameter(layer.bias.detach()[idx].clone())
    layer.nx, layer.nf = layer.weight.shape


@dataclass(frozen=True)
class SeparateProjections:
    """q/k/v/o as four ``nn.Linear`` and an int ``head_dim`` on the attention module."""

    q: str
    k: str
    v: str
    o: str

    def matches(self, m: nn.Module) -> bool:
        linear = all(
            isinstance(getattr(m, n, None), nn.Linear) for n in (self.q, self.k, self.v, self.o)
        )
        return linear and isinstance(getattr(m, "head_dim", None), int)  # fmt: skip

    def projections(self, name: str) -> list[str]:
        return [f"{name}.{n}" for n in (self.q, self.k, self.v, self.o)]

    @staticmethod
    def _group(m: nn.Module) -> int:
        return int(getattr(m, "num_key_value_groups", 1))

    def units(self, m: nn.Module) -> int:
        return getattr(m, self.k).out_features // m.head_dim

    def scores(self, m: nn.Module) -> Tensor:
        units, group = self.units(m), self._group(m)
        o = _unit_norms(getattr(m, self.o).weight, units * group, dim=1).reshape(units, group)
        v = _unit_norms(getattr(m, self.v).weight, units, dim=0)
        return (o * v[:, None]).sum(dim=1)

    def keep(self, m: nn.Module, kept: Tensor) -> None:
        queries, kv = _rows(kept, self._group(m) * m.head_dim), _rows(kept, m.head_dim)
        for attr, idx, dim in ((self.q, queries, 0), (self.k, kv, 0), (self.v, kv, 0), (self.o, queries, 1)):  # fmt: skip
            setattr(m, attr, _narrow_linear(getattr(m, attr), idx, dim))


@dataclass(frozen=True)
class FusedConv1D:
    """GPT-2: ``c_attn`` Conv1D computing q|k|v side by side, ``c_proj`` Conv1D."""

    def matches(self, m: nn.Module) -> bool:
        fused = all(type(getattr(m, n, None)).__name__ == "Conv1D" for n in ("c_attn", "c_proj"))
        return fused and not hasattr(m, "q_attn") and hasattr(m, "split_size")

    def projections(self, name: str) -> list[str]:
        return [f"{name}.c_attn", f"{name}.c_proj"]

    def units(self, m: nn.Module) -> int:
        return m.split_size // m.head_dim

    def scores(self, m: nn.Module) -> Tensor:
        units = self.units(m)
        v = _unit_norms(m.c_attn.weight[:, 2 * m.split_size :], units, dim=1)
        return _unit_norms(m.c_proj.weight, units, dim=0) * v

    def keep(self, m: nn.Module, kept: Tensor) -> None:
        rows, width = _rows(kept, m.head_dim), m.split_size
        _narrow_conv1d(m.c_attn, torch.cat([rows, rows + width, rows + 2 * width]), dim=1)
        _narrow_conv1d(m.c_proj, rows, dim=0)
        m.num_heads, m.split_size = len(kept), len(kept) * m.head_dim


@dataclass(frozen=True)
class NestedProjections:
    """BERT-style: the attention module holds the heads' module ``inner`` (``query``,
    ``key``, ``value`` Linear, ``attention_head_size``, ``num_attention_heads``,
    ``all_head_size``) and the output projection ``output.dense`` beside it."""

    inner: str

    def _parts(self, m: nn.Module) -> tuple[nn.Module, nn.Module]:
        return getattr(m, self.inner), m.output

    def matches(self, m: nn.Module) -> bool:
        inner, out = getattr(m, self.inner, None), getattr(m, "output", None)
        if inner is None or not isinstance(getattr(out, "dense", None), nn.Linear):
            return False
        linear = all(
            isinstance(getattr(inner, n, None), nn.Linear) for n in ("query", "key", "value")
        )
        return linear and isinstance(getattr(inner, "attention_head_size", None), int)  # fmt: skip

    def projections(self, name: str) -> list[str]:
        inner = f"{name}.{self.inner}"
        return [f"{inner}.query", f"{inner}.key", f"{inner}.value", f"{name}.output.dense"]

    def units(self, m: nn.Module) -> int:
        inner, _ = self._parts(m)
        return inner.key.out_features // inner.attention_head_size

    def scores(self, m: nn.Module) -> Tensor:
        (inner, out), units = self._parts(m), self.units(m)
        return _unit_norms(out.dense.weight, units, dim=1) * _unit_norms(inner.value.weight, units, dim=0)  # fmt: skip

    def keep(self, m: nn.Module, kept: Tensor) -> None:
        inner, out = self._parts(m)
        rows = _rows(kept, inner.attention_head_size)
        for attr in ("query", "key", "value"):
            setattr(inner, attr, _narrow_linear(getattr(inner, attr), rows, 0))
        out.dense = _narrow_linear(out.dense, rows, 1)
        inner.num_attention_heads = len(kept)
        inner.all_head_size = len(kept) * inner.attention_head_size


ADAPTERS = (SeparateProjections("q", "k", "v", "o"),
            SeparateProjections("q_proj", "k_proj", "v_proj", "o_proj"), FusedConv1D(),
            NestedProjections("self"))  # fmt: skip
Adapter = SeparateProjections | FusedConv1D | NestedProjections


def attention_layers(
    model: nn.Module, exclude: Sequence[str] = ()
) -> list[tuple[str, nn.Module, Adapter]]:
    """Attention modules with prunable heads, by name, minus any that is excluded or has
    an excluded projection."""
    found = []
    for name, m in model.named_modules():
        adapter = next((a for a in ADAPTERS if a.matches(m)), None)
        if adapter is None:
            continue
        names = [name, *adapter.projections(name)]
        if not any(n == e or n.startswith(e + ".") for n in names for e in exclude):
            found.append((name, m, adapter))
    return found


def head_counts(model: nn.Module) -> dict[str, int]:
    """Prunable heads (key/value groups under grouped-query attention) per attention layer."""
    return {name: a.units(m) for name, m, a in attention_layers(model)}


def heads_removed(units: int, fraction: float) -> int:
    return round(fraction * units)


def count_errors(counts: dict[str, int], fraction: float) -> list[str]:
    """Why ``fraction`` cannot prune these layers: it would remove every head or none."""
    problems = []
    for name, units in counts.items():
        removed = heads_removed(units, fraction)
        if removed >= units:
            problems.append(f"{fraction} would remove every head of attention layer {name!r} ({units} heads)")  # fmt: skip
        elif removed == 0:
            problems.append(f"{fraction} would remove no head of attention layer {name!r} ({units} heads)")  # fmt: skip
    return problems


def head_scores(model: nn.Module, exclude: Sequence[str] = ()) -> dict[str, Tensor]:
    return {name: a.scores(m) for name, m, a in attention_layers(model, exclude)}


@torch.no_grad()
def apply_heads(
    model: nn.Module, fraction: float, exclude: Sequence[str] = ()
) -> dict[str, list[int]]:
    """Remove ``round(fraction * heads)`` lowest-scoring heads of every attention layer,
    in place; returns the removed head indices per layer (ties: the lower index goes)."""
    layers = attention_layers(model, exclude)
    if not layers:
        raise CompressionError("head pruning: the model has no attention layers to prune")
    problems = count_errors({name: a.units(m) for name, m, a in layers}, fraction)
    if problems:
        raise CompressionError(f"head pruning: {problems[0]}")
    removed = {}
    for name, m, adapter in layers:
        scores = adapter.scores(m)
        order = torch.argsort(scores.cpu(), stable=True)
        drop = order[: heads_removed(len(scores), fraction)]
        adapter.keep(m, torch.sort(order[len(drop) :]).values)
        removed[name] = sorted(drop.tolist())
    sync_config(model)
    return removed


def sync_config(model: nn.Module) -> None:
    """Make a Hugging Face Llama-style config (``num_attention_heads``,
    ``num_key_value_heads``, ``head_dim``) say the heads its attention layers have now,
    where every layer sharing it has the same count: that config then builds the pruned
    shapes (``save_pretrained``/``from_pretrained``, tools that read the head count).
    Left unchanged where the layers differ (some were excluded) and for GPT-2 and BERT,
    whose configs derive the head width from ``hidden_size / heads`` and so cannot describe
    fewer heads of the same width."""
    shapes: dict[int, tuple[object, set[tuple[int, int, int]]]] = {}
    for _, m, adapter in attention_layers(model):
        config = getattr(m, "config", None)
        if isinstance(adapter, SeparateProjections) and hasattr(config, "num_key_value_heads"):
            shape = (adapter.units(m), adapter._group(m), m.head_dim)
            shapes.setdefault(id(config), (config, set()))[1].add(shape)
    for config, found in shapes.values():
        if len(found) == 1:
            [(units, group, head_dim)] = found
            config.num_key_value_heads, config.num_attention_heads = units, units * group
            config.head_dim = head_dim


@torch.no_grad()
def resize_heads(model: nn.Module, counts: dict[str, int]) -> nn.Module:
    """Narrow each named attention layer to its first ``counts[name]`` heads: the shapes a
    saved head-pruned model needs before ``load_state_dict`` (the values are then loaded)."""
    layers = {name: (m, a) for name, m, a in attention_layers(model)}
    for name, count in counts.items():
        if name not in layers:
            raise CompressionError(
                f"head counts name {name!r}, not an attention layer of the model"
            )
        m, adapter = layers[name]
        if count != adapter.units(m):
            adapter.keep(m, torch.arange(count))
    sync_config(model)
    return model
