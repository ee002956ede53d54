"""Mixed precision: resolve ``auto``, build the autocast context and the GradScaler.

The nanoGPT idiom: ``autocast(device, dtype)`` around the forward pass and a
``GradScaler(enabled=fp16)`` around backward/step. bf16 needs no scaler.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def autocast(self, device: torch.device):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """Enabled only for fp16; disabled scalers pass losses and steps through unchanged."""
        return torch.amp.GradScaler(device.type, enabled=self.name == "fp16")


@cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform  # stdlib: the repo's platform/ folder has no __init__.py on purpose

    return platform.processor() or platform.machine()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """Turn ``auto|fp32|bf16|fp16`` into a concrete choice and say why."""
    if requested != "auto":
        return Precision(requested, "requested in config")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"auto: {torch.cuda.get_device_name(device)} supports bf16")
        return Precision("fp16", "auto: CUDA device without bf16, fp16 with GradScaler")
    if cpu_has_native_bf16():
        return Precision("bf16", "auto: CPU has native bf16 (AMX/avx512_bf16)")
    return Precision(
        "fp32",
        "auto: CPU without native bf16 (no AMX/avx512_bf16); bf16 would be emulated and slow",
    )
