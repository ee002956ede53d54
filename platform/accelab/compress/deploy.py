"""Save a deployable (compressed) model as tensors + a JSON recipe, and load it back.

    deploy.json        kind (fp32 | int8 | int8-static | fake-quant), trainable, shapes, bits
    model.safetensors  fp32 / fake-quant weights        (kind fp32, fake-quant)
    model_int8.pt      int8 state_dict, weights_only    (kind int8, int8-static)
    model_float.safetensors  the fp32 weights before any quantization (pruned shapes): what
                       ONNX Runtime and torch.export start from (``load_float``)

Structured pruning changes layer widths, so the recipe records every Linear/Conv2d/
BatchNorm shape and the loader rebuilds those layers before loading the weights; head
pruning also changes head counts (GPT-2 keeps its own), recorded per attention layer.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from accelab.compress.heads import head_counts, resize_heads
from accelab.compress.pipeline import Deployable
from accelab.compress.quant import (
    FAKE_QUANT_TYPES,
    convert_int8_dynamic,
    convert_int8_static,
    load_int8,
    prepare_fake_quant,
    save_int8,
    strip_fake_quant,
)
from accelab.errors import UsageError
from accelab.tasks import resolve_task
from accelab.training.checkpoint import load_model_state, save_model

RECIPE = "deploy.json"
FLOAT_FILE = "model_float.safetensors"


def layer_shapes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Shapes of the float layers, keyed by their names outside any fake-quant wrapper."""
    wrappers = {n for n, m in model.named_modules() if isinstance(m, FAKE_QUANT_TYPES)}
    shapes: dict[str, dict[str, Any]] = {}
    for raw, m in model.named_modules():
        parent, _, leaf = raw.rpartition(".")
        name = parent if leaf == "layer" and parent in wrappers else raw
        if isinstance(m, nn.Linear):
            shapes[name] = {
                "type": "Linear",
                "in": m.in_features,
                "out": m.out_features,
                "bias": m.bias is not None,
            }
        elif isinstance(m, nn.Conv2d):
            shapes[name] = {
                "type": "Conv2d", "in": m.in_channels, "out": m.out_channels, "bias": m.bias is not None,
                "kernel_size": list(m.kernel_size), "stride": list(m.stride), "padding": list(m.padding),
                "dilation": list(m.dilation), "groups": m.groups,
            }  # fmt: skip
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            shapes[name] = {"type": type(m).__name__, "num_features": m.num_features}
    return shapes


def rebuild_layers(model: nn.Module, shapes: dict[str, dict[str, Any]]) -> nn.Module:
    for name, s in shapes.items():
        if s["type"] == "Linear":
            layer: nn.Module = nn.Linear(s["in"], s["out"], bias=s["bias"])
        elif s["type"] == "Conv2d":
            layer = nn.Conv2d(
                s["in"], s["out"], tuple(s["kernel_size"]), tuple(s["stride"]), tuple(s["padding"]),
                tuple(s["dilation"]), s["groups"], bias=s["bias"],
            )  # fmt: skip
        else:
            layer = getattr(nn, s["type"])(s["num_features"])
        model.set_submodule(name, layer)
    return model


INT8_KINDS = ("int8", "int8-static")  # torch.ao modules: saved whole, weights-only loadable
SAVED_KINDS = (*INT8_KINDS, "fp32", "fake-quant", "bf16")


def save_deployable(
    d: Deployable,
    directory: Path,
    trainable: dict[str, Any],
    float_model: nn.Module,
    quant: dict[str, Any],
) -> Path:
    """Write ``d`` to ``directory``; ``float_model`` is the pre-conversion model (shapes,
    and the fp32 weights the exports start from). A kind it cannot save is refused before
    anything is written."""
    if d.kind not in SAVED_KINDS:
        raise UsageError(f"saving {d.kind} models is not supported (backend {d.backend})")
    directory.mkdir(parents=True, exist_ok=True)
    plain = strip_fake_quant(copy.deepcopy(float_model))
    save_model(plain, directory / FLOAT_FILE)
    recipe = {
        "kind": d.kind,
        "backend": d.backend,
        "simulated": d.simulated,
        "trainable": trainable,
        "layers": layer_shapes(float_model),
        "heads": head_counts(plain),
        "bits": quant["bits"],
        "activations": quant["activations"],
        "quant": quant,
    }
    if d.kind in INT8_KINDS:
        save_int8(d.model, directory / "model_int8.pt")
    else:
        save_model(d.model, directory / "model.safetensors")
    (directory / RECIPE).write_text(json.dumps(recipe, indent=1))
    return directory


def read_recipe(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not (directory / RECIPE).is_file():
        raise UsageError(f"{directory}: not an accelab deployable model (no {RECIPE})")
    return json.loads((directory / RECIPE).read_text())


def builder(recipe: dict[str, Any]):
    """The task and a function building the model with the recipe's layer shapes."""
    t = recipe["trainable"]
    task = resolve_task(t["name"])

    def build() -> nn.Module:
        model = task.build_model(t["model"], **t.get("model_args", {}))
        return rebuild_layers(resize_heads(model, recipe.get("heads", {})), recipe["layers"])

    return task, build


def load_float(directory: str | Path) -> nn.Module:
    """The fp32 model a deployable was made from (pruned, fine-tuned, not quantized)."""
    directory = Path(directory)
    _, build = builder(read_recipe(directory))
    model = build()
    model.load_state_dict(load_model_state(directory / FLOAT_FILE))
    return model.eval()


def load_deployable(directory: str | Path) -> nn.Module:
    """Rebuild the model saved by ``save_deployable`` (eval mode, CPU)."""
    directory = Path(directory)
    recipe = read_recipe(directory)
    task, build = builder(recipe)
    layers = recipe.get("quant", {}).get("layers") or {}  # the per-layer recipe, if any

    if recipe["kind"] == "int8":
        return load_int8(
            build, directory / "model_int8.pt", lambda m: convert_int8_dynamic(m, layers)
        )
    if recipe["kind"] == "int8-static":  # same FX graph, then the saved int8 weights and scales
        example = task.example_input(1)
        return load_int8(
            build, directory / "model_int8.pt", lambda m: convert_int8_static(m, [example], layers)
        )
    model = build()
    if recipe["kind"] == "fake-quant":
        prepare_fake_quant(model, recipe["bits"], recipe["activations"], recipe=layers)
    model.load_state_dict(load_model_state(directory / "model.safetensors"))
    if recipe["kind"] == "bf16":
        model = model.to(torch.bfloat16)
    return model.eval()
