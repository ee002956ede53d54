"""Quantization's exact arithmetic and plumbing on tiny untrained models (milliseconds, no
training): the fake-quant formulas against hand-computed values and torch's own
``fake_quantize_per_tensor_affine``, the observers, what ``prepare_fake_quant`` builds,
calibration's batch count and mode, the packed-size report, and the int8 converters'
engine, scheme, calibration data and file loading. The accuracy-level tests in
test_compress_quant.py train a model; these are the ones the mutation group runs."""

from __future__ import annotations

import pickle
import sys
import warnings

# torch's FX tracer (static int8) imports torch._dynamo and networkx on its first trace:
# seconds per process. Imported with the module, so that the processes mutation testing
# forks after collection (one per mutant) start with them loaded.
import networkx  # noqa: F401
import pytest
import torch
import torch._dynamo  # noqa: F401
import torch.nn.functional as F
from torch import nn

from accelab.compress.errors import CompressionError
from accelab.compress.quant import (
    ActivationFakeQuant,
    FakeQuantConv2d,
    FakeQuantLinear,
    calibrate,
    convert_int8_dynamic,
    convert_int8_static,
    convert_torchao,
    fake_quant_activation,
    fake_quant_report,
    fake_quant_weight,
    has_fake_quant,
    load_int8,
    prepare_fake_quant,
    save_int8,
    strip_fake_quant,
)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def message(exc: pytest.ExceptionInfo) -> str:
    return str(exc.value)


# --- the formulas ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5), (4, 2, 3, 3)])
@pytest.mark.parametrize("bits", [2, 3, 8])
def test_weight_fake_quant_rounds_each_output_channel_to_its_own_grid(shape, bits):
    torch.manual_seed(1)
    weight = torch.randn(shape) * torch.arange(1, shape[0] + 1).view(-1, *[1] * (len(shape) - 1))
    weight[0] = 0.0  # an all-zero channel stays zero (no 0/0)
    qmax = 2 ** (bits - 1) - 1
    expected = torch.empty_like(weight)
    for i, channel in enumerate(weight):
        scale = max(float(channel.abs().max()), 1e-12) / qmax
        expected[i] = torch.round(channel / scale) * scale
    torch.testing.assert_close(fake_quant_weight(weight, bits), expected, rtol=0, atol=1e-6)


def test_weight_fake_quant_keeps_the_dtype_and_passes_gradients_straight_through():
    weight = torch.randn(4, 6, requires_grad=True)
    upstream = torch.randn(4, 6)
    (fake_quant_weight(weight, 3) * upstream).sum().backward()
    assert torch.equal(weight.grad, upstream)  # identity gradient, not round's zero
    bf16 = torch.randn(4, 6).bfloat16()
    out = fake_quant_weight(bf16, 4)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, fake_quant_weight(bf16.float(), 4).bfloat16())


def test_asymmetric_activation_fake_quant_by_hand():
    # 2 bits on [-1, 3]: levels 0..3, scale 4/3, zero point round(0.75) = 1
    x = torch.tensor([-2.0, -1.0, 0.0, 0.3, 1.0, 2.5, 5.0])
    out = fake_quant_activation(x, torch.tensor(-1.0), torch.tensor(3.0), 2, symmetric=False)
    s = 4 / 3
    torch.testing.assert_close(out, torch.tensor([-s, -s, 0.0, 0.0, s, 2 * s, 2 * s]))


def test_symmetric_activation_fake_quant_by_hand():
    # 2 bits symmetric on max(|-1|, |2|) = 2: levels -1, 0, 1 times 2
    x = torch.tensor([-3.0, -0.9, 0.9, 1.1, 3.0])
    out = fake_quant_activation(x, torch.tensor(-1.0), torch.tensor(2.0), 2, symmetric=True)
    torch.testing.assert_close(out, torch.tensor([-2.0, 0.0, 0.0, 2.0, 2.0]))


@pytest.mark.parametrize("lo, hi", [(0.5, 2.0), (-3.0, -1.0), (-1.0, 3.0)])
def test_8bit_activation_fake_quant_matches_torch_and_represents_zero(lo, hi):
    """The range always includes 0 (so zero padding / ReLU zeros are exact), then torch's
    own per-tensor fake-quant with that scale and zero point."""
    x = torch.linspace(-4, 4, 101)
    ours = fake_quant_activation(x, torch.tensor(lo), torch.tensor(hi), 8, symmetric=False)
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    scale = (hi0 - lo0) / 255
    zero = round(-lo0 / scale)
    torch.testing.assert_close(ours, torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255))
    assert float(ours[50]) == 0.0
    sym = fake_quant_activation(x, torch.tensor(lo), torch.tensor(hi), 8, symmetric=True)
    scale = max(abs(lo), abs(hi)) / 127
    torch.testing.assert_close(sym, torch.fake_quantize_per_tensor_affine(x, scale, 0, -127, 127))


def test_activation_fake_quant_passes_gradients_straight_through_in_its_dtype():
    x = torch.randn(10, requires_grad=True)
    fake_quant_activation(x, torch.tensor(-1.0), torch.tensor(1.0), 4, False).sum().backward()
    assert torch.equal(x.grad, torch.ones(10))
    out = fake_quant_activation(x.detach().bfloat16(), torch.tensor(-1.0), torch.tensor(1.0), 4,
                                True)  # fmt: skip
    assert out.dtype == torch.bfloat16


# --- the observer ---------------------------------------------------------------------------


def test_observer_defaults_and_description():
    a = ActivationFakeQuant(8)
    assert (a.bits, a.symmetric, a.observer, a.momentum, a.calibrating) == (8, False, "minmax",
                                                                             0.01, False)  # fmt: skip
    assert a.initialized.dtype == torch.uint8  # every DDP backend broadcasts uint8
    assert (float(a.min_val), float(a.max_val), int(a.initialized)) == (0.0, 0.0, 0)
    assert a.extra_repr() == "bits=8, asymmetric, observer=minmax"
    assert ActivationFakeQuant(4, True, "moving_average").extra_repr() == (
        "bits=4, symmetric, observer=moving_average"
    )


def test_an_observer_passes_inputs_through_until_it_has_seen_one_and_only_learns_when_asked():
    a = ActivationFakeQuant(2).eval()
    x = torch.tensor([-1.0, 0.2, 3.0])
    assert a(x) is x and int(a.initialized) == 0  # eval, not calibrating: no observation
    a.calibrating = True
    a(x)
    a.calibrating = False
    assert (float(a.min_val), float(a.max_val), int(a.initialized)) == (-1.0, 3.0, 1)
    expected = fake_quant_activation(x, torch.tensor(-1.0), torch.tensor(3.0), 2, False)
    assert torch.equal(a(x), expected)
    a(torch.tensor([-7.0, 9.0]))  # eval again: the range stays
    assert (float(a.min_val), float(a.max_val)) == (-1.0, 3.0)
    a.train()(torch.tensor([-7.0, 9.0]))  # training (QAT) observes
    assert (float(a.min_val), float(a.max_val)) == (-7.0, 9.0)
    sym = ActivationFakeQuant(2, symmetric=True).train()
    sym(x)
    expected = fake_quant_activation(x, torch.tensor(-1.0), torch.tensor(3.0), 2, True)
    assert torch.equal(sym.eval()(x), expected)


def test_minmax_keeps_the_extremes_and_moving_average_follows_by_momentum():
    minmax = ActivationFakeQuant(8).train()
    for batch in ([0.0, 1.0], [-1.0, 0.5], [0.2, 3.0]):
        minmax(torch.tensor(batch))
    assert (float(minmax.min_val), float(minmax.max_val)) == (-1.0, 3.0)
    moving = ActivationFakeQuant(8, observer="moving_average", momentum=0.5).train()
    moving(torch.tensor([0.0, 1.0]))
    moving(torch.tensor([-1.0, 3.0]))
    assert (float(moving.min_val), float(moving.max_val)) == (-0.5, 2.0)
    default = ActivationFakeQuant(8, observer="moving_average").train()
    default(torch.tensor([0.0, 1.0]))
    default(torch.tensor([-1.0, 3.0]))
    assert float(default.min_val) == pytest.approx(-0.01) and float(default.max_val) == (
        pytest.approx(1.02)
    )


# --- the wrappers and prepare ---------------------------------------------------------------


def calibrated_observer(bits: int = 4) -> ActivationFakeQuant:
    a = ActivationFakeQuant(bits).train()
    a(torch.tensor([-2.0, 2.0]))
    return a.eval()


def test_wrappers_run_their_layer_on_fake_quantized_weights_and_inputs():
    torch.manual_seed(0)
    x = torch.randn(3, 6)
    linear = nn.Linear(6, 5)
    wrapped = FakeQuantLinear(linear, 3, calibrated_observer())
    qx = fake_quant_activation(x, torch.tensor(-2.0), torch.tensor(2.0), 4, False)
    expected = F.linear(qx, fake_quant_weight(linear.weight, 3), linear.bias)
    torch.testing.assert_close(wrapped(x), expected)
    assert wrapped.extra_repr() == "bits=3" and isinstance(FakeQuantLinear(linear, 8).input_quant,
                                                           nn.Identity)  # fmt: skip
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    images = torch.randn(2, 2, 7, 7)
    wrapped = FakeQuantConv2d(conv, 5, calibrated_observer())
    qi = fake_quant_activation(images, torch.tensor(-2.0), torch.tensor(2.0), 4, False)
    expected = F.conv2d(qi, fake_quant_weight(conv.weight, 5), conv.bias, stride=2, padding=1)
    torch.testing.assert_close(wrapped(images), expected)


def test_prepare_passes_the_activation_settings_to_every_observer():
    model = prepare_fake_quant(mlp(), 8, activations=True, activation_bits=4,
                               symmetric_activations=True, observer="moving_average")  # fmt: skip
    for layer in (model[1], model[3]):
        assert layer.bits == 8
        q = layer.input_quant
        assert (q.bits, q.symmetric, q.observer) == (4, True, "moving_average")
    same = prepare_fake_quant(mlp(), 6, activations=True)
    assert (same[1].input_quant.bits, same[1].input_quant.symmetric) == (6, False)
    assert same[1].input_quant.observer == "minmax"
    assert isinstance(prepare_fake_quant(mlp(), 8)[1].input_quant, nn.Identity)
    excluded = prepare_fake_quant(mlp(), 8, exclude=["3"])
    assert type(excluded[3]) is nn.Linear and type(excluded[1]) is FakeQuantLinear


@pytest.mark.parametrize("bits", [2, 8])
def test_prepare_accepts_2_to_8_bits_for_weights_and_activations(bits):
    model = prepare_fake_quant(mlp(), bits, activations=True, activation_bits=bits)
    assert model[1].bits == bits and model[3].input_quant.bits == bits


def test_prepare_refuses_bad_widths_names_and_a_second_preparation_in_whole_sentences():
    for kwargs in ({"bits": 9}, {"bits": 8, "activation_bits": 1}, {"bits": True}):
        with pytest.raises(CompressionError) as exc:
            prepare_fake_quant(mlp(), **kwargs)
        bad = next(v for v in kwargs.values() if v not in (8,))
        assert message(exc) == f"fake-quant bit-width must be an integer in 2..8, got {bad!r}"
    with pytest.raises(CompressionError) as exc:
        prepare_fake_quant(mlp(), 8, exclude=["fc9"])
    assert message(exc) == "unknown layer names in exclude: ['fc9']"
    with pytest.raises(CompressionError) as exc:
        prepare_fake_quant(prepare_fake_quant(mlp(), 8), 8)
    assert message(exc) == "model is already prepared for fake quantization"


def test_a_bare_layer_is_wrapped_and_stripped_as_a_whole():
    linear, conv = nn.Linear(4, 2), nn.Conv2d(1, 2, 3)
    wrapped = prepare_fake_quant(linear, 8)
    assert type(wrapped) is FakeQuantLinear and wrapped.layer is linear
    assert type(prepare_fake_quant(conv, 8)) is FakeQuantConv2d
    assert has_fake_quant(wrapped) and not has_fake_quant(linear)
    assert strip_fake_quant(wrapped) is linear
    model = mlp()
    params = list(model.parameters())
    prepared = prepare_fake_quant(model, 4, recipe={"3": None})
    assert has_fake_quant(prepared) and type(prepared[3]) is nn.Linear
    stripped = strip_fake_quant(prepared)
    assert stripped is model and not has_fake_quant(stripped)
    assert [type(m) for m in stripped] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert all(a is b for a, b in zip(stripped.parameters(), params, strict=True))


# --- calibration ----------------------------------------------------------------------------


def observed() -> nn.Sequential:
    torch.manual_seed(0)
    return prepare_fake_quant(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)), 8,
                              activations=True)  # fmt: skip


def test_calibrate_runs_exactly_num_batches_in_eval_mode_and_restores_the_mode():
    batches = [(torch.full((4, 2), float(i)), torch.zeros(4)) for i in (1, 2, 3)]
    model = observed().train()
    bn = model[1]
    assert calibrate(model, batches, num_batches=2) is model
    observer = model[0].input_quant
    assert float(observer.max_val) == 2.0  # batches 1 and 2, not 3
    assert model.training and not observer.calibrating
    assert int(bn.num_batches_tracked) == 0  # ran in eval mode: the norm statistics kept
    model = observed().eval()
    calibrate(model, [[torch.full((4, 2), 5.0)], torch.full((4, 2), 7.0)])  # list, bare tensor
    assert not model.training and float(model[0].input_quant.max_val) == 7.0


def test_calibrate_without_batches_or_observers_says_so():
    with pytest.raises(CompressionError) as exc:
        calibrate(observed(), [torch.ones(4, 2)], num_batches=0)
    assert message(exc) == "calibration saw no batches"
    model = observed()
    with pytest.raises(CompressionError):
        calibrate(model, [])
    assert not model[0].input_quant.calibrating  # reset even on failure
    with pytest.raises(CompressionError) as exc:
        calibrate(prepare_fake_quant(mlp(), 8), [torch.ones(4, 8)])
    assert message(exc) == "nothing to calibrate: prepare_fake_quant(..., activations=True) first"


# --- the report -----------------------------------------------------------------------------


def test_report_of_activations_mixed_widths_and_no_quantized_layer():
    fp32 = 4 * (8 * 16 + 16 + 16 * 4 + 4)
    model = prepare_fake_quant(mlp(), 8, activations=True, recipe={"3": 4})
    before = fake_quant_report(model)
    packed = 8 * 16 + 4 * 16 + 4 * 16 + 8 + (16 * 4 * 4 // 8) + 4 * 4 + 4 * 4 + 8
    assert before == {"bits": [4, 8], "quantized_layers": 2, "activations": True,
                      "activations_calibrated": False, "packed_size_bytes": packed,
                      "fp32_size_bytes": fp32}  # fmt: skip
    calibrate(model, [torch.ones(2, 8)])
    assert fake_quant_report(model)["activations_calibrated"] is True
    plain = fake_quant_report(prepare_fake_quant(mlp(), 3, recipe={"*": None}))
    assert plain == {"bits": None, "quantized_layers": 0, "activations": False,
                     "activations_calibrated": None, "packed_size_bytes": fp32,
                     "fp32_size_bytes": fp32}  # fmt: skip
    conv = fake_quant_report(prepare_fake_quant(nn.Conv2d(3, 5, 3), 3))
    assert conv["packed_size_bytes"] == -(-5 * 3 * 9 * 3 // 8) + 4 * 5 + 4 * 5  # ceil
    assert conv["bits"] == 3


# --- real int8 kernels ----------------------------------------------------------------------


@pytest.fixture
def engine():
    previous = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = previous


def test_dynamic_int8_prefers_the_x86_engine_and_quantizes_weights_per_channel(engine):
    torch.backends.quantized.engine = "qnnpack"
    model = mlp().train()
    int8 = convert_int8_dynamic(model)
    assert torch.backends.quantized.engine == "x86"
    assert int8[1].weight().qscheme() == torch.per_channel_affine
    assert not int8.training and all(m.training for m in model.modules())
    assert type(model[1]) is nn.Linear
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.ao's deprecation notices silenced
        convert_int8_dynamic(model)


def test_static_int8_takes_its_activation_ranges_from_every_calibration_batch(engine):
    torch.backends.quantized.engine = "qnnpack"
    small, large = torch.randn(16, 8), 50 * torch.randn(16, 8)
    first_only = getattr(convert_int8_static(mlp(), [small]), "0_scale_0")
    both = getattr(convert_int8_static(mlp(), [small, large]), "0_scale_0")
    assert torch.backends.quantized.engine == "x86"
    assert float(both) > 10 * float(first_only)
    model = mlp().train()
    int8 = convert_int8_static(model, [small])
    assert not int8.training and all(m.training for m in model.modules())  # a deep copy
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]


def test_static_int8_of_an_untraceable_model_names_the_reason():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(CompressionError) as exc:
        convert_int8_static(Branchy(), [torch.randn(2, 8)])
    assert message(exc) == (
        "torch static int8 (FX) cannot trace this model: TraceError: symbolically traced "
        "variables cannot be used as inputs to control flow"
    )


class Payload:
    """Not a tensor: a weights-only load must refuse to unpickle it."""


def test_int8_files_round_trip_in_eval_mode_and_refuse_pickled_objects(tmp_path):
    int8 = convert_int8_dynamic(mlp())
    save_int8(int8, tmp_path / "int8.pt")
    reloaded = load_int8(lambda: mlp().train(), tmp_path / "int8.pt")
    assert not reloaded.training
    x = torch.randn(3, 8)
    assert torch.equal(reloaded(x), int8(x))
    static = convert_int8_static(mlp(), [torch.randn(4, 8)])
    save_int8(static, tmp_path / "static.pt")  # Int8Linear counts as int8 too
    with pytest.raises(CompressionError) as exc:
        save_int8(mlp(), tmp_path / "float.pt")
    assert message(exc) == "save_int8 expects a model from convert_int8_dynamic/_static"
    state = int8.state_dict()
    state["payload"] = Payload()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_int8(mlp, tmp_path / "evil.pt")


def test_torchao_refuses_other_widths_and_names_the_package(monkeypatch):
    pytest.importorskip("torchao")
    with pytest.raises(CompressionError) as exc:
        convert_torchao(mlp(), 2)
    assert message(exc) == "torchao backend supports 8 or 4 bits, got 2"
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # as if not installed
    with pytest.raises(CompressionError) as exc:
        convert_torchao(mlp(), 4)
    assert message(exc) == (
        "backend torchao-int4-weight-only needs the torchao package (pip install torchao)"
    )


def test_torchao_int4_asks_for_tinygemm_groups_of_32_on_bf16_linears_only(monkeypatch):
    """The int4 kernel runs on CUDA only (benchmarks/gpu.sh); here torchao's real config is
    built and only ``quantize_`` records what it was asked to do."""
    torchao = pytest.importorskip("torchao.quantization")
    calls = []
    monkeypatch.setattr(torchao, "quantize_", lambda *a, **k: calls.append((a, k)))
    model = mlp()
    assert convert_torchao(model, 4) is model and model[1].weight.dtype == torch.bfloat16
    (((target, config), kwargs),) = calls
    assert target is model and type(config).__name__ == "Int4WeightOnlyConfig"
    assert (config.group_size, config.int4_packing_format) == (32, "tile_packed_to_4d")
    assert config.set_inductor_config is False
    keep = kwargs["filter_fn"]
    assert keep(nn.Linear(64, 4), "") is True  # in_features a multiple of the group
    assert keep(nn.Linear(48, 4), "") is False and keep(nn.Linear(33, 4), "") is False
    assert keep(nn.Conv2d(64, 4, 1), "") is False
