"""An ONNX Runtime session as a measurement runner (see ``accelab.measure.runners``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from accelab.export.onnx import INPUT, session


@dataclass
class OrtRunner:
    """ONNX Runtime on the CPU execution provider, ``threads`` intra-op threads (fixed at
    session creation). ``model`` is the torch model it was exported from (parameters and
    MACs are counted there); its size is the ONNX file's."""

    onnx: bytes
    model: nn.Module
    backend: str
    threads: int = 1
    device: str = "cpu (onnxruntime CPUExecutionProvider)"
    simulated: bool = False
    _session: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._session = session(self.onnx, self.threads)

    def active(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def __call__(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self._session.run(None, {INPUT: x.numpy()})[0])

    def size_bytes(self) -> int:
        return len(self.onnx)
