"""What a deployable model directory holds, and that every kind loads back to the model
that was measured: the recipe field by field, the layer shapes a pruned model needs
(every Conv2d argument, both BatchNorms, names outside fake-quant wrappers), the files per
kind, the fp32 weights the exports start from, and the errors naming the directory.
Untrained tiny models, milliseconds each (the mutation group ``deploy`` runs them)."""

from __future__ import annotations

import copy
import json

# torch's FX tracer (static int8) imports torch._dynamo and networkx on its first trace:
# seconds per process. Imported with the module instead, so that the processes mutation
# testing forks after collecting the tests (one per mutant) start with them loaded.
import networkx  # noqa: F401
import pytest
import torch
import torch._dynamo  # noqa: F401
from torch import nn

from accelab.backends import SIMULATED, TORCH_BF16, TORCH_FP32, TORCH_INT8, TORCH_INT8_STATIC
from accelab.compress.deploy import (
    FLOAT_FILE,
    RECIPE,
    builder,
    layer_shapes,
    load_deployable,
    load_float,
    read_recipe,
    rebuild_layers,
    save_deployable,
)
from accelab.compress.pipeline import Deployable
from accelab.compress.quant import (
    ActivationFakeQuant,
    calibrate,
    convert_int8_dynamic,
    convert_int8_static,
    has_fake_quant,
    prepare_fake_quant,
)
from accelab.config.schema import QuantConfig
from accelab.errors import UsageError
from trainables.digits import TASK

MLP = {"name": "digits", "model": "mlp", "model_args": {"hidden": [16]}}
CNN = {"name": "digits", "model": "cnn", "model_args": {"channels": 4, "hidden": 16}}
X = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def built(trainable: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TASK.build_model(trainable["model"], **trainable["model_args"]).eval()


def quant(**fields) -> dict:
    return QuantConfig(**fields).model_dump()


def out(model: nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    with torch.no_grad():
        return model(X.to(dtype))


class Odd(nn.Module):
    """One of each layer kind, every Conv2d argument off its default, and a module named
    ``layer`` that is no fake-quant wrapper."""

    def __init__(self, channels: int = 6, hidden: int = 5, conv_bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(2, channels, (3, 1), stride=(2, 1), padding=(1, 0),
                              dilation=(1, 2), groups=2, bias=conv_bias)  # fmt: skip
        self.bn2 = nn.BatchNorm2d(channels)
        self.block = nn.Module()
        self.block.layer = nn.Linear(4, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.head = nn.Linear(hidden, 3)


ODD = {
    "conv": {"type": "Conv2d", "in": 2, "out": 6, "bias": False, "kernel_size": [3, 1],
             "stride": [2, 1], "padding": [1, 0], "dilation": [1, 2], "groups": 2},
    "bn2": {"type": "BatchNorm2d", "num_features": 6},
    "block.layer": {"type": "Linear", "in": 4, "out": 5, "bias": False},
    "bn1": {"type": "BatchNorm1d", "num_features": 5},
    "head": {"type": "Linear", "in": 5, "out": 3, "bias": True},
}  # fmt: skip


def test_layer_shapes_record_every_argument_the_rebuild_needs():
    assert layer_shapes(Odd()) == ODD


def test_layer_shapes_name_the_float_layers_outside_fake_quant_wrappers():
    wrapped = prepare_fake_quant(Odd(), 4)
    assert isinstance(wrapped.block.layer.layer, nn.Linear)  # wrapped: block.layer.layer
    assert layer_shapes(wrapped) == ODD


def test_rebuild_gives_every_layer_its_recorded_shape():
    narrow = Odd(channels=4, hidden=2, conv_bias=True)
    rebuilt = rebuild_layers(Odd(), layer_shapes(narrow))
    assert rebuilt.conv.bias is not None
    assert layer_shapes(rebuilt) == layer_shapes(narrow)
    assert rebuilt.load_state_dict(narrow.state_dict()) is not None  # every tensor fits
    assert type(rebuilt.bn1) is nn.BatchNorm1d and type(rebuilt.bn2) is nn.BatchNorm2d


def test_a_fake_quant_deployable_writes_its_recipe_and_both_weight_files(tmp_path):
    plain = built(MLP)
    model = prepare_fake_quant(copy.deepcopy(plain), 4, activations=True, recipe={"3": None})
    calibrate(model, [X])
    q = quant(bits=4, activations=True, real_kernel=False, layers={"3": None})
    directory = tmp_path / "new" / "dir"  # parents created
    saved = save_deployable(Deployable(model, SIMULATED, True, "fake-quant"), directory, MLP,
                            plain, q)  # fmt: skip
    assert saved == directory
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [RECIPE, FLOAT_FILE, "model.safetensors"]
    )
    assert read_recipe(directory) == {
        "kind": "fake-quant", "backend": SIMULATED, "simulated": True, "trainable": MLP,
        "layers": layer_shapes(plain), "heads": {}, "bits": 4, "activations": True, "quant": q,
    }  # fmt: skip
    loaded = load_deployable(directory)
    assert not loaded.training and has_fake_quant(loaded)
    assert isinstance(loaded.get_submodule("3"), nn.Linear)  # the recipe's float layer
    observers = [m for m in loaded.modules() if isinstance(m, ActivationFakeQuant)]
    assert len(observers) == 1 and observers[0].bits == 4 and bool(observers[0].initialized)
    torch.testing.assert_close(out(loaded), out(model), rtol=0, atol=0)
    float_model = load_float(directory)
    assert not float_model.training and not has_fake_quant(float_model)
    torch.testing.assert_close(out(float_model), out(plain), rtol=0, atol=0)


def test_the_float_file_holds_the_float_model_not_the_shipped_one(tmp_path):
    """A QAT model is its own float model: its wrappers are stripped in a copy (the caller's
    model keeps them); the float weights are the float model's, even where they differ."""
    qat = prepare_fake_quant(built(MLP), 4)
    other = built(MLP, seed=1)
    save_deployable(Deployable(other, TORCH_FP32, False, "fp32"), tmp_path, MLP, qat, quant())
    assert has_fake_quant(qat)
    assert read_recipe(tmp_path)["layers"] == layer_shapes(built(MLP))
    torch.testing.assert_close(out(load_float(tmp_path)), out(built(MLP)), rtol=0, atol=0)
    torch.testing.assert_close(out(load_deployable(tmp_path)), out(other), rtol=0, atol=0)
    save_deployable(Deployable(other, TORCH_FP32, False, "fp32"), tmp_path, MLP, qat, quant())


def test_int8_dynamic_reloads_with_the_layers_the_recipe_keeps_float(tmp_path):
    plain = built(MLP)
    q = quant(bits=8, layers={"3": None})
    int8 = convert_int8_dynamic(plain, {"3": None})
    save_deployable(Deployable(int8, TORCH_INT8, False, "int8"), tmp_path, MLP, plain, q)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [RECIPE, FLOAT_FILE, "model_int8.pt"]
    )
    loaded = load_deployable(tmp_path)
    assert type(loaded.get_submodule("3")) is nn.Linear
    assert type(loaded.get_submodule("1")) is type(int8.get_submodule("1")) is not nn.Linear
    assert not loaded.training
    torch.testing.assert_close(out(loaded), out(int8), rtol=0, atol=0)


def test_bf16_reloads_in_bf16(tmp_path):
    plain = built(MLP)
    bf16 = copy.deepcopy(plain).to(torch.bfloat16)
    save_deployable(Deployable(bf16, TORCH_BF16, False, "bf16"), tmp_path, MLP, plain,
                    quant(bits=16))  # fmt: skip
    loaded = load_deployable(tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16} and not loaded.training
    torch.testing.assert_close(
        out(loaded, torch.bfloat16), out(bf16, torch.bfloat16), rtol=0, atol=0
    )


def test_a_kind_without_a_file_format_is_refused_before_anything_is_written(tmp_path):
    plain = built(MLP)
    target = tmp_path / "deployable"
    with pytest.raises(UsageError) as e:
        save_deployable(Deployable(plain, "torchao-int8-weight-only", False, "torchao"),
                        target, MLP, plain, quant(bits=8))  # fmt: skip
    assert str(e.value) == (
        "saving torchao models is not supported (backend torchao-int8-weight-only)"
    )
    assert not target.exists()  # no recipe, and no stray float file either


def test_a_directory_without_a_recipe_is_named_in_the_error(tmp_path):
    (tmp_path / RECIPE).mkdir()  # not a file either
    with pytest.raises(UsageError) as e:
        read_recipe(tmp_path)
    assert str(e.value) == f"{tmp_path}: not an accelab deployable model (no {RECIPE})"
    with pytest.raises(UsageError, match="not an accelab deployable model"):
        load_deployable(tmp_path / "missing")


def test_a_recipe_without_heads_quant_or_model_args_still_loads(tmp_path):
    """Older recipes (before head pruning and per-layer quant recipes), and a trainable
    given without model_args (the builder's defaults)."""
    trainable = {"name": "digits", "model": "mlp"}
    plain = TASK.build_model("mlp").eval()
    save_deployable(Deployable(plain, TORCH_FP32, False, "fp32"), tmp_path, trainable, plain,
                    quant())  # fmt: skip
    recipe = read_recipe(tmp_path)
    del recipe["heads"], recipe["quant"]
    (tmp_path / RECIPE).write_text(json.dumps(recipe))
    task, build = builder(recipe)
    assert task is TASK and layer_shapes(build()) == layer_shapes(plain)
    torch.testing.assert_close(out(load_deployable(tmp_path)), out(plain), rtol=0, atol=0)


def test_int8_static_reloads_its_calibrated_scales(tmp_path):
    plain = built(CNN)
    static = convert_int8_static(plain, [X[:2], X[2:]], {"fc2": None})
    q = quant(bits=8, scheme="static", layers={"fc2": None})
    save_deployable(Deployable(static, TORCH_INT8_STATIC, False, "int8-static"), tmp_path, CNN,
                    plain, q)  # fmt: skip
    assert (tmp_path / "model_int8.pt").is_file() and not (tmp_path / "model.safetensors").exists()
    loaded = load_deployable(tmp_path)
    assert not loaded.training
    torch.testing.assert_close(out(loaded), out(static), rtol=0, atol=0)
