"""Quantization: fake-quant simulation (2-8 bits, QAT-ready) and real int8 kernels on CPU.

Fake quantization only *simulates* low-bit weights/activations in float32: accuracy is
real, speed is not, so models prepared here are always reported as simulated. Real
low-bit execution goes through ``convert_int8_dynamic`` (torch's fbgemm/x86 int8
kernels) on CPU, or torchao on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.ao.nn.quantized import Conv2d as Int8Conv2d
from torch.ao.nn.quantized import Linear as Int8Linear
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
from torch.ao.quantization import (
    get_default_qconfig_mapping,
    per_channel_dynamic_qconfig,
    quantize_dynamic,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from accelab.compress.errors import CompressionError
from accelab.compress.prune import check_layer_names, prunable_layers
from accelab.compress.recipe import Recipe, float_layers, resolve

Observer = Literal["minmax", "moving_average"]
_EPS = 1e-12


@contextlib.contextmanager
def _float32_math(device_type: str) -> Iterator[None]:
    """Turn autocast off so quantization math runs in float32 (also under bf16/fp16 AMP)."""
    if device_type not in ("cpu", "cuda"):
        yield
        return
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def _ste(x32: Tensor, q: Tensor, dtype: torch.dtype) -> Tensor:
    """Straight-through estimator: forward ``q``, gradient of identity."""
    return (x32 + (q - x32).detach()).to(dtype)


def fake_quant_weight(weight: Tensor, bits: int) -> Tensor:
    """Symmetric per-output-channel fake quantization: scale = max|w| / (2^(b-1) - 1)."""
    with _float32_math(weight.device.type):
        w = weight.float()
        qmax = 2 ** (bits - 1) - 1
        dims = tuple(range(1, w.dim()))
        scale = w.abs().amax(dim=dims, keepdim=True).clamp_min(_EPS) / qmax
        q = torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
        return _ste(w, q, weight.dtype)


def fake_quant_activation(x: Tensor, lo: Tensor, hi: Tensor, bits: int, symmetric: bool) -> Tensor:
    """Per-tensor fake quantization of ``x`` to the observed range [lo, hi]."""
    with _float32_math(x.device.type):
        x32 = x.float()
        if symmetric:
            qmin, qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
            scale = torch.maximum(lo.abs(), hi.abs()).clamp_min(_EPS) / qmax
            zero_point = torch.zeros_like(scale)
        else:
            qmin, qmax = 0, 2**bits - 1
            lo, hi = lo.clamp_max(0.0), hi.clamp_min(0.0)
            scale = ((hi - lo) / qmax).clamp_min(_EPS)
            zero_point = torch.clamp(torch.round(-lo / scale), qmin, qmax)
        q = (torch.clamp(torch.round(x32 / scale) + zero_point, qmin, qmax) - zero_point) * scale
        return _ste(x32, q, x.dtype)


class ActivationFakeQuant(nn.Module):
    """Per-tensor activation fake-quant with a min/max or moving-average observer.

    The observer updates in training mode (QAT) and while ``calibrating``; before any
    observation the module passes its input through unchanged.
    """

    def __init__(
        self,
        bits: int,
        symmetric: bool = False,
        observer: Observer = "minmax",
        momentum: float = 0.01,
    ):
        super().__init__()
        self.bits, self.symmetric, self.observer, self.momentum = (
            bits,
            symmetric,
            observer,
            momentum,
        )
        self.calibrating = False
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        # uint8, not bool: every DDP backend can broadcast it.
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        lo, hi = torch.aminmax(x.detach().float())
        if not bool(self.initialized):
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
            self.initialized.fill_(1)
        elif self.observer == "minmax":
            self.min_val.copy_(torch.minimum(self.min_val, lo))
            self.max_val.copy_(torch.maximum(self.max_val, hi))
        else:
            self.min_val.add_(self.momentum * (lo - self.min_val))
            self.max_val.add_(self.momentum * (hi - self.max_val))

    def forward(self, x: Tensor) -> Tensor:
        if self.training or self.calibrating:
            self.observe(x)
        if not bool(self.initialized):
            return x
        return fake_quant_activation(x, self.min_val, self.max_val, self.bits, self.symmetric)

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        return f"bits={self.bits}, {kind}, observer={self.observer}"


class FakeQuant(nn.Module):
    """Holds a layer; runs it with fake-quantized weights (and inputs). Subclasses say how
    the layer applies a weight (``forward``); the holding and naming is shared."""

    def __init__(self, layer: nn.Module, bits: int, input_quant: nn.Module | None = None):
        super().__init__()
        self.layer, self.bits = layer, bits
        self.input_quant = input_quant if input_quant is not None else nn.Identity()

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class FakeQuantLinear(FakeQuant):
    """Holds an ``nn.Linear``."""

    def forward(self, x: Tensor) -> Tensor:
        weight = fake_quant_weight(self.layer.weight, self.bits)
        return F.linear(self.input_quant(x), weight, self.layer.bias)


class FakeQuantConv2d(FakeQuant):
    """Holds an ``nn.Conv2d``."""

    def forward(self, x: Tensor) -> Tensor:
        weight = fake_quant_weight(self.layer.weight, self.bits)
        return self.layer._conv_forward(self.input_quant(x), weight, self.layer.bias)


FAKE_QUANT_TYPES = (FakeQuant,)


def has_fake_quant(model: nn.Module) -> bool:
    return any(isinstance(m, FAKE_QUANT_TYPES) for m in model.modules())


def prepare_fake_quant(
    model: nn.Module,
    bits: int,
    activations: bool = False,
    exclude: Sequence[str] = (),
    *,
    activation_bits: int | None = None,
    symmetric_activations: bool = False,
    observer: Observer = "minmax",
    recipe: Recipe | None = None,
) -> nn.Module:
    """Wrap every Linear/Conv2d (minus ``exclude``) in place for fake quantization.

    Parameters stay the original float weights, so the result trains under DDP/AMP (QAT).
    With ``activations`` the input of each wrapped layer is fake-quantized too; run
    ``calibrate`` (or train) before evaluating. ``recipe`` (``compress.recipe``) gives
    layers another bit-width, or keeps them in float (None).
    """
    layers = prunable_layers(model, exclude)
    widths = resolve([name for name, _ in layers], bits, recipe or {})
    for b in {*widths.values(), bits, activation_bits if activation_bits is not None else bits}:
        if b is not None and (not isinstance(b, int) or not 2 <= b <= 8):
            raise CompressionError(f"fake-quant bit-width must be an integer in 2..8, got {b!r}")
    unknown = check_layer_names(model, exclude)
    if unknown:
        raise CompressionError(f"unknown layer names in exclude: {unknown}")
    if has_fake_quant(model):
        raise CompressionError("model is already prepared for fake quantization")
    for name, layer in layers:
        if widths[name] is None:
            continue
        act = None
        if activations:
            act = ActivationFakeQuant(activation_bits or bits, symmetric_activations, observer)
        wrapper_cls = FakeQuantLinear if isinstance(layer, nn.Linear) else FakeQuantConv2d
        wrapper = wrapper_cls(layer, widths[name], act)
        if not name:
            return wrapper
        model.set_submodule(name, wrapper)
    return model


def strip_fake_quant(model: nn.Module) -> nn.Module:
    """Replace fake-quant wrappers by the float layers they hold (in place)."""
    if isinstance(model, FAKE_QUANT_TYPES):
        return model.layer
    for name, module in list(model.named_modules()):
        if name and isinstance(module, FAKE_QUANT_TYPES):
            model.set_submodule(name, module.layer)
    return model


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable, num_batches: int | None = None) -> nn.Module:
    """Run up to ``num_batches`` batches (tensors or (x, y) pairs) to set activation ranges."""
    observers = [m for m in model.modules() if isinstance(m, ActivationFakeQuant)]
    if not observers:
        raise CompressionError(
            "nothing to calibrate: prepare_fake_quant(..., activations=True) first"
        )
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    for obs in observers:
        obs.calibrating = True
    seen = 0
    try:
        for batch in batches:
            if num_batches is not None and seen >= num_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            seen += 1
    finally:
        for obs in observers:
            obs.calibrating = False
        model.train(was_training)
    if seen == 0:
        raise CompressionError("calibration saw no batches")
    return model


def fake_quant_report(model: nn.Module) -> dict[str, object]:
    """Bit-width and the packed size the weights would have as real low-bit tensors.

    Packed size: ``ceil(n * bits / 8)`` per quantized weight + one fp32 scale per output
    channel + fp32 biases + 8 bytes (scale, zero point) per quantized activation + all
    other parameters in fp32.
    """
    wrappers = [m for m in model.modules() if isinstance(m, FAKE_QUANT_TYPES)]
    covered: set[int] = set()
    packed = 0
    for w in wrappers:
        weight = w.layer.weight
        packed += math.ceil(weight.numel() * w.bits / 8) + 4 * weight.shape[0]
        covered.add(id(weight))
        if isinstance(w.input_quant, ActivationFakeQuant):
            packed += 8
    params = list(model.parameters())
    packed += sum(4 * p.numel() for p in params if id(p) not in covered)
    observers = [m for m in model.modules() if isinstance(m, ActivationFakeQuant)]
    bits = sorted({w.bits for w in wrappers})
    return {
        "bits": bits[0] if len(bits) == 1 else (bits or None),
        "quantized_layers": len(wrappers),
        "activations": bool(observers),
        "activations_calibrated": all(bool(o.initialized) for o in observers)
        if observers
        else None,
        "packed_size_bytes": packed,
        "fp32_size_bytes": sum(4 * p.numel() for p in params),
    }


# --- real kernels -------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_quantization_warnings() -> Iterator[None]:
    """Silence torch.ao's deprecation notices (the API still works in torch 2.13/2.14)."""
    with warnings.catch_warnings():
        for message in (
            r"torch\.ao\.quantization is deprecated",
            r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
            r"TypedStorage is deprecated",
        ):
            warnings.filterwarnings("ignore", message=message)
        yield


def _select_int8_engine() -> str:
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm"):
        if engine in engines:
            torch.backends.quantized.engine = engine
            return engine
    raise CompressionError(f"no x86/fbgemm int8 engine in this torch build (have {engines})")


def kept_float(model: nn.Module, recipe: Recipe | None) -> list[str]:
    """The Linear/Conv2d layers of ``model`` that ``recipe`` keeps in float."""
    return float_layers([name for name, _ in prunable_layers(model)], recipe or {})


def convert_int8_dynamic(model: nn.Module, recipe: Recipe | None = None) -> nn.Module:
    """A copy of ``model`` with Linear layers as int8 dynamic-quantized kernels (CPU).

    Weights: int8 per output channel; activations quantized per batch at run time.
    Other layers (e.g. Conv2d), and those ``recipe`` keeps in float, stay fp32.
    Fake-quant wrappers are stripped first.
    """
    _select_int8_engine()
    model = strip_fake_quant(copy.deepcopy(model)).cpu().eval()
    spec: dict = {nn.Linear: per_channel_dynamic_qconfig}
    spec.update({name: None for name in kept_float(model, recipe)})  # a name beats its type
    with quiet_quantization_warnings():
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def convert_int8_static(
    model: nn.Module, calibration: Iterable[Tensor], recipe: Recipe | None = None
) -> nn.Module:
    """A copy of ``model`` with Conv and Linear layers (minus those ``recipe`` keeps in
    float) as int8 static kernels (torch FX, x86 engine): activations calibrated on
    ``calibration`` batches (training data).
    Raises ``CompressionError`` if the model cannot be traced symbolically."""
    engine = _select_int8_engine()
    model = strip_fake_quant(copy.deepcopy(model)).cpu().eval()
    batches = list(calibration)
    mapping = get_default_qconfig_mapping(engine)
    for name in kept_float(model, recipe):
        mapping.set_module_name(name, None)
    with quiet_quantization_warnings(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prepared = prepare_fx(model, mapping, (batches[0],))
        except Exception as exc:  # FX tracing fails on data-dependent control flow
            raise CompressionError(
                f"torch static int8 (FX) cannot trace this model: {type(exc).__name__}: {exc}"
            ) from None
        with torch.inference_mode():
            for batch in batches:
                prepared(batch)
        return convert_fx(prepared)


@contextlib.contextmanager
def float32_matmul_kept() -> Iterator[None]:
    """Restore torch's process-wide float32 matmul precision afterwards. torchao's
    ``quantize_`` sets it to "high" by default (its recommended inductor settings): every
    later fp32 matmul on CUDA then runs on TF32, so the dense "fp32" baseline timed in the
    same process ran 3.4x faster than fp32 on an H200 (1.5 vs 5.2 ms), and each speedup
    against it was understated."""
    previous = torch.get_float32_matmul_precision()
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def convert_torchao(model: nn.Module, bits: int) -> nn.Module:
    """Real int8/int4 weight-only CUDA kernels through torchao (imported lazily; run by
    benchmarks/gpu.sh on a GPU, never on a CPU host). int4 uses the tinygemm layout
    (``tile_packed_to_4d``), torch's own ``_weight_int4pack_mm`` kernel: torchao's default
    int4 layout needs the separate ``mslk`` kernel package. Neither call changes torch's
    global settings (``set_inductor_config=False``, and ``float32_matmul_kept``)."""
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise CompressionError(
            f"backend torchao-int{bits}-weight-only needs the torchao package (pip install torchao)"
        ) from exc
    with float32_matmul_kept():
        if bits == 8:
            quantize_(model, Int8WeightOnlyConfig(set_inductor_config=False))
        elif bits == 4:
            group = 32
            model = model.to(torch.bfloat16)
            quantize_(
                model,
                Int4WeightOnlyConfig(
                    group_size=group, int4_packing_format="tile_packed_to_4d",
                    set_inductor_config=False,
                ),
                filter_fn=lambda m, _: isinstance(m, nn.Linear) and m.in_features % group == 0,
            )  # fmt: skip
        else:
            raise CompressionError(f"torchao backend supports 8 or 4 bits, got {bits}")
    return model


def int8_types() -> tuple[type, ...]:
    """torch's int8 Linear/Conv modules (their ``weight()`` is a method, not a parameter)."""
    return (DynamicInt8Linear, Int8Linear, Int8Conv2d)


def save_int8(model: nn.Module, path: str | os.PathLike) -> None:
    """Save an int8 model's state_dict (loadable with weights_only=True)."""
    if not any(isinstance(m, int8_types()) for m in model.modules()):
        raise CompressionError("save_int8 expects a model from convert_int8_dynamic/_static")
    with quiet_quantization_warnings():
        torch.save(model.state_dict(), path)


def load_int8(
    builder: Callable[[], nn.Module],
    path: str | os.PathLike,
    convert: Callable[[nn.Module], nn.Module] = convert_int8_dynamic,
) -> nn.Module:
    """Rebuild with ``builder()`` (same architecture/widths), convert, load the int8 weights."""
    model = convert(builder())
    with quiet_quantization_warnings():
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
