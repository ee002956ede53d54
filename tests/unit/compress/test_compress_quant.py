"""Quantization primitives: fake-quant accuracy/QAT plumbing and the real int8 kernel."""

from __future__ import annotations

import copy
import math
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from accelab.backends import backend_for
from accelab.compress import (
    CompressionError,
    FakeQuantConv2d,
    FakeQuantLinear,
    calibrate,
    convert_int8_dynamic,
    fake_quant_report,
    load_int8,
    prepare_fake_quant,
    save_int8,
)
from accelab.compress.quant import convert_torchao, fake_quant_weight
from tests.helpers_torch import accuracy as evaluate_accuracy
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK

HIDDEN = (256, 256)


@pytest.fixture(scope="module")
def trained():
    return trained_mlp(HIDDEN)


def fake_quant_accuracy(model, splits, bits, **kwargs):
    quantized = prepare_fake_quant(copy.deepcopy(model), bits, **kwargs)
    if kwargs.get("activations"):
        calibrate(quantized, DataLoader(splits.train, batch_size=128), num_batches=4)
    return evaluate_accuracy(quantized, splits.test)


def test_8bit_close_to_fp32_and_2bit_lower(trained):
    model, splits = trained
    fp32 = evaluate_accuracy(model, splits.test)
    acc8 = fake_quant_accuracy(model, splits, 8)
    acc8_act = fake_quant_accuracy(model, splits, 8, activations=True)
    acc2 = fake_quant_accuracy(model, splits, 2)
    assert abs(acc8 - fp32) <= 0.01
    assert abs(acc8_act - fp32) <= 0.01
    assert acc2 < acc8


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_fake_quant_is_per_channel_symmetric(bits):
    weight = torch.randn(6, 20)
    quantized = fake_quant_weight(weight, bits)
    for row, qrow in zip(weight, quantized, strict=True):
        assert len(torch.unique(qrow)) <= 2**bits - 1
        assert qrow.abs().max() == pytest.approx(float(row.abs().max()), rel=1e-5)


def test_wrappers_keep_original_parameters_and_pass_gradients(trained):
    model, splits = trained
    original = copy.deepcopy(model)
    quantized = prepare_fake_quant(original, 4, activations=True, exclude=["5"])
    assert isinstance(quantized[1], FakeQuantLinear) and isinstance(quantized[5], nn.Linear)
    assert [n for n, _ in quantized.named_parameters()][:2] == ["1.layer.weight", "1.layer.bias"]
    quantized.train()
    x, y = splits.train.tensors
    nn.functional.cross_entropy(quantized(x[:32]), y[:32]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in quantized.parameters())


def test_conv_wrapper_and_autocast_bf16():
    torch.manual_seed(0)
    model = prepare_fake_quant(TASK.build_model("cnn"), 8, activations=True)
    assert isinstance(model.conv, FakeQuantConv2d)
    x = torch.rand(4, 1, 8, 8)
    calibrate(model, [x], num_batches=1)
    expected = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)


def test_fake_quant_report_packed_size(trained):
    model, _ = trained
    report = fake_quant_report(prepare_fake_quant(copy.deepcopy(model), 4, exclude=["5"]))
    sizes = [(64, 256), (256, 256)]
    expected = sum(math.ceil(i * o * 4 / 8) + 4 * o + 4 * o for i, o in sizes)
    expected += 4 * (256 * 10 + 10)
    assert report["bits"] == 4 and report["quantized_layers"] == 2
    assert report["packed_size_bytes"] == expected


def test_prepare_and_calibrate_validation(trained):
    model, _ = trained
    for bits in (1, 9, 4.0):
        with pytest.raises(CompressionError, match="bit-width"):
            prepare_fake_quant(copy.deepcopy(model), bits)
    with pytest.raises(CompressionError, match="fc9"):
        prepare_fake_quant(copy.deepcopy(model), 8, exclude=["fc9"])
    with pytest.raises(CompressionError, match="calibrate"):
        calibrate(prepare_fake_quant(copy.deepcopy(model), 8), [torch.rand(2, 1, 8, 8)])


def test_moving_average_observer_calibrates(trained):
    model, splits = trained
    quantized = prepare_fake_quant(
        copy.deepcopy(model), 8, activations=True, observer="moving_average"
    )
    assert fake_quant_report(quantized)["activations_calibrated"] is False
    calibrate(quantized, DataLoader(splits.train, batch_size=64), num_batches=3)
    assert fake_quant_report(quantized)["activations_calibrated"] is True


def test_backend_for_each_runtime_bit_width_and_scheme():
    assert backend_for("torch", 32, "dynamic") == "torch-fp32"
    assert backend_for("torch", 8, "dynamic") == "torch-int8-x86"
    assert backend_for("torch", 8, "static") == "torch-int8-x86-static"
    assert backend_for("onnxruntime", 32, "dynamic") == "ort-fp32"
    assert backend_for("onnxruntime", 8, "dynamic") == "ort-int8-dynamic"
    assert backend_for("onnxruntime", 8, "static") == "ort-int8-static"
    assert (
        backend_for("torch", 4, "dynamic") is None
        and backend_for("onnxruntime", 2, "static") is None
    )
    assert backend_for("torch", 8, "dynamic", "cuda") == "torchao-int8-weight-only"
    assert backend_for("torch", 4, "dynamic", "cuda") == "torchao-int4-weight-only"
    assert backend_for("torch", 16, "dynamic") == "torch-bf16"
    assert backend_for("onnxruntime", 16, "dynamic") is None
    assert backend_for("onnxruntime", 4, "dynamic") == "ort-int4-weight-only-b32"  # MatMulNBits
    assert backend_for("onnxruntime", 4, "static", "cuda", 128) == "ort-int4-weight-only-b128"
    assert backend_for("torch", 2, "dynamic", "cuda") is None


def test_torchao_missing_is_a_clear_error(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # as if not installed
    with pytest.raises(CompressionError, match="pip install torchao"):
        convert_torchao(copy.deepcopy(trained[0]), 4)


def test_int8_saved_and_reloaded_gives_same_predictions(trained, tmp_path):
    model, splits = trained
    int8 = convert_int8_dynamic(model)
    assert isinstance(model[1], nn.Linear)  # the float model is left alone
    assert torch.backends.quantized.engine in ("x86", "fbgemm")
    path = tmp_path / "int8.pt"
    save_int8(int8, path)
    reloaded = load_int8(lambda: TASK.build_model("mlp", hidden=list(HIDDEN)), path)
    x = splits.test.tensors[0]
    with torch.inference_mode():
        assert torch.equal(int8(x), reloaded(x))
    assert (
        abs(evaluate_accuracy(reloaded, splits.test) - evaluate_accuracy(model, splits.test))
        <= 0.01
    )
    with pytest.raises(CompressionError):
        save_int8(model, tmp_path / "float.pt")


def test_int8_from_qat_model_strips_wrappers(trained):
    model, splits = trained
    qat = prepare_fake_quant(copy.deepcopy(model), 8)
    int8 = convert_int8_dynamic(qat)
    assert isinstance(qat[1], FakeQuantLinear)
    assert abs(evaluate_accuracy(int8, splits.test) - evaluate_accuracy(model, splits.test)) <= 0.01
