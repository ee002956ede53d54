"""Pruning: unstructured magnitude (one-shot or gradual) and structured channel pruning.

A per-layer recipe (``compression.prune.layers``: a layer name or fnmatch pattern ->
sparsity, resolved as ``accelab.compress.recipe`` says) gives the layers it names their
own sparsity, each ranked inside itself; the other layers follow the global sparsity and
scope. A sparsity of 0 keeps a layer dense.

Unstructured pruning zeroes weights but keeps dense tensors, so dense kernels run at the
same speed. Structured pruning (torch-pruning) removes whole channels and really
shrinks the layers. Functions change the model in place and return it; build the
optimizer *after* pruning (``prune.remove`` and torch-pruning replace parameters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.utils import prune

from accelab.compress.errors import CompressionError
from accelab.compress.recipe import value_of

Scope = Literal["global", "layer"]
PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)
SparsityRecipe = Mapping[str, float]


def _is_excluded(name: str, exclude: Sequence[str]) -> bool:
    """True if ``name`` is an excluded module or lies inside one."""
    return any(name == e or name.startswith(e + ".") for e in exclude)


def prunable_layers(model: nn.Module, exclude: Sequence[str] = ()) -> list[tuple[str, nn.Module]]:
    """Linear and Conv2d modules by qualified name, in registration order, minus ``exclude``."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES) and not _is_excluded(name, exclude)
    ]


def check_layer_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """The names in ``names`` that are not modules of ``model`` (empty list if all exist)."""
    known = {name for name, _ in model.named_modules() if name}
    return [name for name in names if name not in known]


def _require_layers(model: nn.Module, exclude: Sequence[str]) -> list[tuple[str, nn.Module]]:
    unknown = check_layer_names(model, exclude)
    if unknown:
        raise CompressionError(f"unknown layer names in exclude: {unknown}")
    layers = prunable_layers(model, exclude)
    if not layers:
        raise CompressionError("model has no Linear or Conv2d layers left to prune")
    return layers


def _check_fraction(value: float, what: str, *, allow_one: bool = True) -> None:
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (value >= 0.0 and upper_ok):
        bound = "[0, 1]" if allow_one else "[0, 1)"
        raise CompressionError(f"{what} must be in {bound}, got {value}")


def split_by_recipe(
    layers: list[tuple[str, nn.Module]], recipe: SparsityRecipe
) -> tuple[list[tuple[str, nn.Module, float]], list[tuple[str, nn.Module]]]:
    """(the layers ``recipe`` gives their own sparsity, with it; the rest)."""
    own, rest = [], []
    for name, m in layers:
        value = value_of(name, None, recipe)
        if value is None:
            rest.append((name, m))
        else:
            _check_fraction(value, f"sparsity of layer {name!r}")
            own.append((name, m, float(value)))
    return own, rest


def apply_unstructured(
    model: nn.Module,
    sparsity: float,
    scope: Scope = "global",
    exclude: Sequence[str] = (),
    recipe: SparsityRecipe | None = None,
) -> nn.Module:
    """Zero the smallest-|w| weights (L1) and make it permanent.

    ``global`` ranks all prunable weights together and zeroes exactly
    ``round(sparsity * n)`` of them; ``layer`` does the same inside each layer. A layer
    that ``recipe`` names is pruned inside itself at its own sparsity instead.
    """
    _check_fraction(sparsity, "sparsity")
    if scope not in ("global", "layer"):
        raise CompressionError(f"scope must be 'global' or 'layer', got {scope!r}")
    layers = _require_layers(model, exclude)
    own, rest = split_by_recipe(layers, recipe or {})
    for _, m, amount in own:
        prune.l1_unstructured(m, "weight", amount=amount)
    if scope == "global" and rest:
        prune.global_unstructured(
            [(m, "weight") for _, m in rest],
            pruning_method=prune.L1Unstructured,
            amount=float(sparsity),
        )
    elif scope == "layer":
        for _, m in rest:
            prune.l1_unstructured(m, "weight", amount=float(sparsity))
    for _, m in layers:
        prune.remove(m, "weight")
    return model


def _keep_mask(scores: Tensor, num_zeros: int) -> Tensor:
    """Boolean mask keeping all but the ``num_zeros`` smallest scores (stable, deterministic)."""
    mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if num_zeros > 0:
        order = torch.argsort(scores.reshape(-1), stable=True)
        mask[order[:num_zeros]] = False
    return mask.reshape(scores.shape)


def make_masks(
    model: nn.Module,
    sparsity: float,
    scope: Scope = "global",
    exclude: Sequence[str] = (),
    recipe: SparsityRecipe | None = None,
) -> dict[str, Tensor]:
    """Magnitude masks (True = keep) by layer name; identical weights give identical masks.
    A layer that ``recipe`` names is ranked inside itself at its own sparsity."""
    _check_fraction(sparsity, "sparsity")
    if scope not in ("global", "layer"):
        raise CompressionError(f"scope must be 'global' or 'layer', got {scope!r}")
    own, rest = split_by_recipe(_require_layers(model, exclude), recipe or {})
    masks = {name: _keep_mask(m.weight.detach().abs(), round(s * m.weight.numel()))
             for name, m, s in own}  # fmt: skip
    weights = [m.weight.detach().abs() for _, m in rest]
    if scope == "layer":
        masks |= {name: _keep_mask(w, round(sparsity * w.numel()))
                  for (name, _), w in zip(rest, weights, strict=True)}  # fmt: skip
    elif rest:
        flat = torch.cat([w.reshape(-1) for w in weights])
        keep = _keep_mask(flat, round(sparsity * flat.numel()))
        parts = keep.split([w.numel() for w in weights])
        masks |= {name: part.reshape(w.shape)
                  for (name, _), part, w in zip(rest, parts, weights, strict=True)}  # fmt: skip
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """Zero masked-out weights in place (``weight *= mask``)."""
    for name, mask in masks.items():
        model.get_submodule(name).weight.mul_(mask)
    return model


def cubic_sparsity(
    step: int, total_steps: int, final: float, initial: float = 0.0, begin_step: int = 0
) -> float:
    """Zhu & Gupta (2017): ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / n) ** 3``, clamped."""
    if total_steps <= 0:
        return final if step >= begin_step else initial
    progress = min(max((step - begin_step) / total_steps, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


@dataclass
class GradualPruner:
    """Gradual magnitude pruning on the cubic schedule.

    Call ``step(model, global_step)`` after every ``optimizer.step()`` (pass the
    unwrapped module under DDP): on update steps it recomputes the masks at the
    scheduled sparsity; on every step it re-applies them so pruned weights stay zero.
    """

    final_sparsity: float
    total_steps: int
    initial_sparsity: float = 0.0
    begin_step: int = 0
    frequency: int = 1
    scope: Scope = "global"
    exclude: tuple[str, ...] = ()
    layers: tuple[tuple[str, float], ...] = ()  # per-layer final sparsities (a recipe)
    masks: dict[str, Tensor] = field(default_factory=dict)
    sparsity: float = 0.0

    def scheduled(self, step: int, final: float) -> float:
        """The cubic schedule's sparsity at ``step`` toward ``final``."""
        initial = min(self.initial_sparsity, final)
        return cubic_sparsity(step, self.total_steps, final, initial, self.begin_step)

    def is_update_step(self, step: int) -> bool:
        end = self.begin_step + self.total_steps
        if not self.begin_step <= step <= end:
            return False
        return (step - self.begin_step) % max(self.frequency, 1) == 0 or step == end

    def step(self, model: nn.Module, step: int) -> float:
        """Update masks if due, apply them, and return the current target sparsity."""
        # No masks yet (e.g. a restarted worker past its last update step): rebuild them.
        if self.is_update_step(step) or not self.masks:
            self.sparsity = self.scheduled(step, self.final_sparsity)
            recipe = {key: self.scheduled(step, final) for key, final in self.layers}
            self.masks = make_masks(model, self.sparsity, self.scope, self.exclude, recipe)
        apply_masks(model, self.masks)
        return self.sparsity


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def structured_targets(
    model: nn.Module, exclude: Sequence[str] = (), only: Sequence[str] = ()
) -> list[tuple[str, nn.Module]]:
    """The layers whose output channels structured pruning removes: every prunable layer
    but the output one and ``exclude``, or, when ``only`` names suffixes (a transformer's
    MLP ``fc1``: its hidden units), just those; widths that other layers share through a
    residual stream, embeddings and norms are never touched."""
    layers = prunable_layers(model)
    output = layers[-1][0]
    keep = [
        (name, m)
        for name, m in layers
        if name != output and not _is_excluded(name, exclude)
        and (not only or name.endswith(tuple(only)))
    ]  # fmt: skip
    return keep


def structured_ratios(
    targets: list[tuple[str, nn.Module]], ratio: float, recipe: SparsityRecipe | None = None
) -> dict[str, float]:
    """Each target's ratio of output channels to remove: its own under ``recipe``, else
    ``ratio``. Raises ``CompressionError`` where one would keep no channel."""
    ratios = {}
    for name, module in targets:
        ratios[name] = r = float(value_of(name, ratio, recipe or {}))
        _check_fraction(r, f"structured pruning ratio of layer {name!r}", allow_one=False)
        channels = _out_channels(module)
        # torch-pruning keeps int(channels * (1 - ratio)) channels.
        if int(channels * (1 - r)) < 1:
            raise CompressionError(
                f"structured pruning ratio {r} would remove every output channel of layer "
                f"{name!r} ({channels} channels); use a ratio of at most {1 - 1 / channels:.4f}"
            )
    return ratios


def apply_structured(
    model: nn.Module,
    ratio: float,
    example_input: Tensor,
    exclude: Sequence[str] = (),
    only: Sequence[str] = (),
    recipe: SparsityRecipe | None = None,
) -> nn.Module:
    """Remove ``ratio`` of the output channels of the ``structured_targets`` (L2 magnitude),
    or a target's own ratio where ``recipe`` names it.

    Raises ``CompressionError`` if some layer would keep no channel, or if no layer may be
    pruned at all."""
    _check_fraction(ratio, "structured pruning ratio", allow_one=False)
    _require_layers(model, exclude)
    targets = structured_targets(model, exclude, only)
    if not targets:
        raise CompressionError("structured pruning: no layer whose outputs may be removed")
    chosen = {id(m) for _, m in targets}
    ignored = [m for m in model.modules()
               if isinstance(m, PRUNABLE_TYPES + (nn.Embedding, nn.LayerNorm)) and id(m) not in chosen]  # fmt: skip
    ratios = structured_ratios(targets, ratio, recipe)
    if not any(ratios.values()):
        return model
    modules = dict(targets)
    pruner = tp.pruner.MetaPruner(
        model,
        example_input,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        pruning_ratio_dict={modules[n]: r for n, r in ratios.items() if r != ratio},
        ignored_layers=ignored,
    )
    check_not_coupled_to_excluded(model, pruner.DG, targets, exclude)
    pruner.step()
    return model


def check_not_coupled_to_excluded(
    model: nn.Module, graph, targets: list[tuple[str, nn.Module]], exclude: Sequence[str]
) -> None:
    """torch-pruning skips a whole dependency group when any member is ignored: a layer
    whose output width is shared (residual add, concatenation) with an excluded layer would
    silently keep every channel. Raise instead, naming both."""
    names = {id(m): n for n, m in model.named_modules()}
    for name, module in targets:
        prune_out = graph.get_pruner_of_module(module).prune_out_channels
        group = graph.get_pruning_group(module, prune_out, idxs=[0])
        coupled = sorted({
            names[id(dep.target.module)] for dep, _ in group
            if graph.is_out_channel_pruning_fn(dep.handler) and id(dep.target.module) in names
            and _is_excluded(names[id(dep.target.module)], exclude)
        })  # fmt: skip
        if coupled:
            raise CompressionError(
                f"compression.prune.exclude: layer {name!r} shares its output channels with "
                f"excluded layer(s) {coupled} (a residual or concatenation couples them), so "
                f"structured pruning would remove nothing from it; exclude {name!r} too, or "
                f"stop excluding {coupled}"
            )


def layer_sparsity(
    model: nn.Module, reference: nn.Module | None = None, exclude: Sequence[str] = ()
) -> dict[str, float]:
    """Per prunable layer, the fraction of its dense weights that are gone: zero, or
    removed (structured pruning) where ``reference`` (the dense model) gives the dense
    weight counts. Without it, the zero fraction."""
    dense = dict(prunable_layers(reference)) if reference is not None else {}
    out = {}
    for name, m in prunable_layers(model, exclude):
        total = dense[name].weight.numel() if name in dense else m.weight.numel()
        out[name] = 1.0 - int(torch.count_nonzero(m.weight.detach())) / total
    return out


def sparsity_report(model: nn.Module, exclude: Sequence[str] = ()) -> dict[str, float]:
    """Parameter counts and the zero fraction of prunable weights, read from the weights."""
    params = list(model.parameters())
    prunable = [m.weight.detach() for _, m in prunable_layers(model, exclude)]
    prunable_params = sum(w.numel() for w in prunable)
    prunable_zeros = sum(w.numel() - int(torch.count_nonzero(w)) for w in prunable)
    return {
        "params": sum(p.numel() for p in params),
        "nonzero_params": sum(int(torch.count_nonzero(p.detach())) for p in params),
        "prunable_params": prunable_params,
        "prunable_zeros": prunable_zeros,
        "sparsity": prunable_zeros / prunable_params if prunable_params else 0.0,
    }
