"""A runner is a model on a backend, ready to run batches: what latency and quality are
measured on. Every runner names its backend, device and thread count.

Backend names are in ``accelab.backends``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from accelab.backends import SIMULATED, TORCH_FP32, TORCH_INT8
from accelab.measure.model_stats import as_model_input

__all__ = ["SIMULATED", "TORCH_FP32", "TORCH_INT8", "Runner", "TorchRunner", "sync"]


class Runner(Protocol):
    backend: str
    device: str
    threads: int
    simulated: bool

    def active(self) -> contextlib.AbstractContextManager: ...

    def __call__(self, x: Tensor) -> Tensor: ...


@dataclass
class TorchRunner:
    """A torch module in eval mode under ``inference_mode`` on ``threads`` intra-op threads
    (set only while ``active``, then restored)."""

    model: nn.Module
    backend: str = TORCH_FP32
    device: str = "cpu"
    threads: int = 1
    simulated: bool = False

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(previous)

    def __call__(self, x: Tensor) -> Tensor:
        return self.model(as_model_input(self.model, x))


def sync(device: str) -> None:
    """Wait for queued GPU work, so that a timer measures the kernels, not their launch."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@dataclass
class GenerateRunner:
    """Greedy generation of ``tokens`` new tokens at batch 1 with ``inner``: the context
    window slides (the full context is recomputed each step: no KV cache), as a model
    without a cache serves text. Timing one call times ``tokens`` steps."""

    inner: Runner
    tokens: int

    def __post_init__(self) -> None:
        self.backend, self.device = self.inner.backend, self.inner.device
        self.threads, self.simulated = self.inner.threads, self.inner.simulated

    def active(self) -> contextlib.AbstractContextManager:
        return self.inner.active()

    def __call__(self, x: Tensor) -> Tensor:
        x = x[:1]
        if self.device.startswith("cuda"):  # the context stays on the GPU between steps
            x = x.to(self.device)
        for _ in range(self.tokens):
            logits = self.inner(x)[:, -1]
            x = torch.cat([x[:, 1:], logits.argmax(dim=-1, keepdim=True).to(x.dtype)], dim=1)
        return logits
