"""What a model costs regardless of speed: parameters (and non-zero ones), MACs per
example, its real serialized size, and the computed packed size of fake-quant weights."""

from __future__ import annotations

import io

import torch
from torch import Tensor, nn

from accelab.compress.quant import (
    FAKE_QUANT_TYPES,
    fake_quant_report,
    has_fake_quant,
    int8_types,
    quiet_quantization_warnings,
)

INT8_TYPES = int8_types()  # weight() is a method
_MAC_TYPES = (nn.Linear, nn.Conv2d, *INT8_TYPES, *FAKE_QUANT_TYPES)


def _weight_of(module: nn.Module) -> Tensor:
    if isinstance(module, FAKE_QUANT_TYPES):
        return module.layer.weight
    if isinstance(module, INT8_TYPES):
        return module.weight()
    return module.weight


def as_model_input(model: nn.Module, x: Tensor) -> Tensor:
    """``x`` on the model's device, and in its dtype when both are floating point (a bf16
    model takes bf16 inputs; token ids stay integers)."""
    param = next(model.parameters(), None)
    if param is None:
        return x
    x = x.to(param.device)
    if param.is_floating_point() and x.is_floating_point() and x.dtype != param.dtype:
        x = x.to(param.dtype)
    return x


def count_macs(model: nn.Module, example_input: Tensor) -> int:
    """Multiply-accumulates of Linear/Conv2d layers (float, fake-quant or int8) for one
    forward pass on ``example_input``; sparse weights count as dense (dense kernels)."""
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        nonlocal total
        weight = _weight_of(module)
        total += output.numel() * (weight.numel() // weight.shape[0])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _MAC_TYPES)]
    was_training = model.training
    try:
        with torch.inference_mode():
            model.eval()(as_model_input(model, example_input))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting int8 packed weights and biases too."""
    tensors = [p.detach() for p in model.parameters()]
    for module in model.modules():
        if isinstance(module, INT8_TYPES):
            tensors.append(module.weight().dequantize())
            if module.bias() is not None:
                tensors.append(module.bias().detach())
    return sum(t.numel() for t in tensors), sum(int(torch.count_nonzero(t)) for t in tensors)


def serialized_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's serialized state_dict: what its file really takes (a fake-quant
    model's file holds fp32 weights, so this is its fp32 size)."""
    buffer = io.BytesIO()
    with quiet_quantization_warnings():
        torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def packed_size_bytes(model: nn.Module) -> int | None:
    """Computed size of fake-quant weights packed at their bit-width (no such file exists);
    None for a model without fake quantization."""
    if not has_fake_quant(model):
        return None
    return int(fake_quant_report(model)["packed_size_bytes"])
