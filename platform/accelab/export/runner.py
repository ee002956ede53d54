"""ONNX Runtime and OpenVINO as measurement runners (see ``accelab.measure.runners``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from accelab.export.onnx import INPUT, session
from accelab.export.openvino import serialized_size


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


OV_SETTINGS = "INFERENCE_NUM_THREADS={threads}, NUM_STREAMS=1, PERFORMANCE_HINT=LATENCY"


@dataclass
class OvRunner:
    """OpenVINO on the CPU plugin with ``INFERENCE_NUM_THREADS=threads``, ``NUM_STREAMS=1``
    and ``PERFORMANCE_HINT=LATENCY``; ``precision`` "f32" sets ``INFERENCE_PRECISION_HINT``,
    None keeps the plugin's default (bf16 on CPUs with bf16 units). The backend is named
    after the precision the compiled model reports, not the one asked for: ``kind`` is
    "fp" (``openvino-f32`` / ``openvino-bf16``) or "int8-nncf" (``openvino-int8-nncf``,
    ``+bf16`` when its float parts run bf16). One compiled model per input shape (static
    shapes are what the CPU plugin runs fastest), compiled on first use."""

    ov_model: object
    model: nn.Module
    kind: str = "fp"
    precision: str | None = "f32"
    threads: int = 1
    simulated: bool = False
    device: str = field(init=False)
    backend: str = field(init=False)
    inference_precision: str = field(init=False)
    _compiled: dict = field(default_factory=dict, repr=False)
    _size: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import openvino as ov  # an optional extra (see export.openvino): only OvRunner needs it

        self._core = ov.Core()
        self._probe = probe = self._core.compile_model(self.ov_model, "CPU", self.config())
        self.inference_precision = _short(probe.get_property("INFERENCE_PRECISION_HINT"))
        threads = int(probe.get_property("INFERENCE_NUM_THREADS"))
        if threads != self.threads:
            raise RuntimeError(f"OpenVINO runs {threads} thread(s), {self.threads} were asked")
        if self.kind == "fp":
            self.backend = f"openvino-{self.inference_precision}"
        else:
            extra = "" if self.inference_precision == "f32" else f"+{self.inference_precision}"
            self.backend = f"openvino-{self.kind}{extra}"
        hint = "default" if self.precision is None else self.precision
        self.device = (
            f"cpu (openvino CPU plugin, {OV_SETTINGS.format(threads=self.threads)}, "
            f"INFERENCE_PRECISION_HINT={hint} -> {self.inference_precision})"
        )

    def config(self) -> dict[str, object]:
        cfg: dict[str, object] = {
            "INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        }  # fmt: skip
        if self.precision is not None:
            cfg["INFERENCE_PRECISION_HINT"] = self.precision
        return cfg

    def setting(self, key: str) -> str:
        """A property of the compiled model as OpenVINO reports it (e.g. NUM_STREAMS)."""
        return str(self._probe.get_property(key))

    def active(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def _request(self, shape: tuple[int, ...]):
        if shape not in self._compiled:
            static = self.ov_model.clone()
            static.reshape({0: list(shape)})
            compiled = self._core.compile_model(static, "CPU", self.config())
            self._compiled[shape] = compiled.create_infer_request()
        return self._compiled[shape]

    def __call__(self, x: Tensor) -> Tensor:
        request = self._request(tuple(x.shape))
        out = request.infer([x.numpy()], share_inputs=True, share_outputs=False)
        return torch.from_numpy(out[0])

    def size_bytes(self) -> int:
        if self._size is None:
            self._size = serialized_size(self.ov_model)
        return self._size


def _short(precision) -> str:
    """OpenVINO's element type as a backend suffix: bf16, f16, f32."""
    names = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
    text = str(precision).removeprefix("<Type: '").removesuffix("'>")
    return names.get(text, text)
