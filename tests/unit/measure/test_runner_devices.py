"""A runner's device and dtype rules on a CPU-only machine (the mutation group
``model_stats`` runs these per mutant; milliseconds, no GPU needed).

The model and its inputs go to the runner's device: shown on torch's ``meta`` device,
which exists without hardware. ``sync`` waits for the named GPU and only for a GPU: its
``torch.cuda.synchronize`` is replaced by a recorder (no CUDA here to wait for). A GPU
generator moves the context to the GPU once, before the first step: on a CPU-only torch
that move is attempted and refused before any step runs. Generation keeps the context's
token dtype (int32 ids stay int32)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accelab.measure.model_stats import as_model_input
from accelab.measure.runners import GenerateRunner, TorchRunner, sync


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def test_a_runner_moves_its_model_and_each_input_to_its_device():
    runner = TorchRunner(mlp(), device="meta")
    assert {p.device.type for p in runner.model.parameters()} == {"meta"}
    assert as_model_input(runner.model, torch.zeros(2, 6)).device.type == "meta"
    with runner.active():
        out = runner(torch.zeros(2, 6))  # a CPU batch: moved, else a device mismatch
    assert out.device.type == "meta" and out.shape == (2, 3)


def test_sync_waits_for_the_named_gpu_and_only_for_a_gpu(monkeypatch):
    waited: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", waited.append)
    for device in ("cpu", "meta", "mps"):
        sync(device)
    assert waited == []
    sync("cuda")
    sync("cuda:1")
    assert waited == ["cuda", "cuda:1"]


class Steps(nn.Module):
    """Next token (last + 1) % 5, for any integer dtype; records each context it sees."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.contexts: list[tuple[str, torch.dtype, list[int]]] = []

    def forward(self, x):
        self.contexts.append((x.device.type, x.dtype, x[0].tolist()))
        return nn.functional.one_hot(((x + 1) % 5).long(), 5).float() + self.p


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only case; a GPU runs the move")
def test_a_gpu_generator_moves_the_context_to_the_gpu_before_the_first_step():
    model = Steps()
    inner = TorchRunner(model)
    inner.device = "cuda:0"  # as a GPU runner names itself (the model stays here)
    gen = GenerateRunner(inner, tokens=2)
    with pytest.raises(AssertionError, match="CUDA"):  # CPU-only torch refuses the move
        gen(torch.tensor([[1, 2, 3]]))
    assert model.contexts == []  # refused before any step ran


def test_generation_keeps_the_context_dtype():
    model = Steps()
    gen = GenerateRunner(TorchRunner(model), tokens=3)
    with gen.active():
        gen(torch.tensor([[0, 1, 2], [3, 3, 3]], dtype=torch.int32))
    assert model.contexts == [
        ("cpu", torch.int32, [0, 1, 2]),
        ("cpu", torch.int32, [1, 2, 3]),
        ("cpu", torch.int32, [2, 3, 4]),
    ]
