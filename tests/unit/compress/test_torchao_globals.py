"""torchao's ``quantize_`` sets torch's process-wide float32 matmul precision to "high" by
default (its recommended inductor settings), so every later fp32 matmul on CUDA ran on
TF32: the dense fp32 baseline timed in the same process as a torchao variant was 3.4x too
fast on an H200, and every speedup against it understated. accelab's conversion must leave
torch's global settings as it found them."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config
from torch import nn

from accelab.compress.quant import convert_torchao, float32_matmul_kept


@pytest.fixture
def highest():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(previous)


def test_the_guard_restores_what_a_library_changed(highest):
    with float32_matmul_kept():
        torch.set_float32_matmul_precision("high")  # what torchao's setter does
    assert torch.get_float32_matmul_precision() == "highest"


def test_torchao_int8_conversion_keeps_fp32_matmuls_fp32(highest):
    pytest.importorskip("torchao")  # in the test extra; the product needs it on CUDA only
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    x = torch.randn(4, 64)
    reference = model(x)
    inductor = torch._inductor.config
    tuning = (inductor.coordinate_descent_tuning, inductor.force_fuse_int_mm_with_mul)
    quantized = convert_torchao(model, 8)
    assert torch.get_float32_matmul_precision() == "highest"
    # torchao's inductor setter is off too (set_inductor_config=False)
    assert (inductor.coordinate_descent_tuning, inductor.force_fuse_int_mm_with_mul) == tuning
    assert type(quantized[0].weight).__name__ != "Parameter"  # really converted
    assert torch.allclose(quantized(x), reference, atol=0.05)
