"""Mixed precision: the autocast context and GradScaler, and ``auto`` chosen by measurement.

The nanoGPT idiom: ``autocast(device, dtype)`` around the forward pass and a
``GradScaler(enabled=fp16)`` around backward/step. bf16 needs no scaler.

``auto`` does not trust CPU flags (bf16 was 36x slower than fp32 on an AVX2-only CPU, and
0.84x-1.37x of fp32 on one with avx512_bf16, depending on the model): it times a few
training steps of the actual model on the actual device in each candidate precision,
in alternating rounds, and keeps a lower precision only when it trains stably and is
faster than fp32 by more than the measurement noise. The decision is cached per model
shape, batch, device and torch version, so it is measured once, not every run.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import Tensor, nn

from accelab.host import device_name

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_GAIN = 0.05  # a lower precision must be >= 5% faster than fp32 (median of rounds) to win
CACHE_ENV = "ACCELAB_CACHE_DIR"


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
def candidates(device: torch.device) -> list[str]:
    """Precisions worth timing on ``device`` (fp32 always first: the reference)."""
    if device.type == "cuda":
        return ["fp32", "bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]
    return ["fp32", "bf16"]  # CPU autocast fp16 exists but has no fast kernels on x86


def time_steps(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    precision: Precision,
    device: torch.device,
    steps: int = 6,
) -> tuple[float, bool]:
    """(median seconds per training step, whether every step stayed finite) on a copy."""
    model = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = precision.grad_scaler(device)
    x, y = batch[0].to(device), batch[1].to(device)
    times, finite = [], True
    for i in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
        finite = finite and math.isfinite(float(loss.detach()))
    return statistics.median(times), finite


def measure_precisions(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    device: torch.device,
    rounds: int = 3,
) -> dict[str, dict[str, float | bool]]:
    """Per precision: median step ms over alternating rounds and whether it stayed finite."""
    names = candidates(device)
    per: dict[str, list[float]] = {n: [] for n in names}
    stable = dict.fromkeys(names, True)
    for _ in range(rounds):
        for name in names:
            seconds, finite = time_steps(model, batch, loss_fn, Precision(name, ""), device)
            per[name].append(seconds * 1000)
            stable[name] = stable[name] and finite
    return {n: {"step_ms": statistics.median(per[n]), "stable": stable[n]} for n in names}


def choose(measured: dict[str, dict[str, float | bool]], min_gain: float = MIN_GAIN) -> Precision:
    """The fastest stable precision that beats fp32 by more than ``min_gain``, else fp32."""
    fp32 = float(measured["fp32"]["step_ms"])
    summary = ", ".join(
        f"{n} {float(m['step_ms']):.2f} ms/step" + ("" if m["stable"] else " (unstable)")
        for n, m in measured.items()
    )
    best, best_ms = "fp32", fp32
    for name, m in measured.items():
        ms = float(m["step_ms"])
        if name != "fp32" and m["stable"] and ms < fp32 * (1 - min_gain) and ms < best_ms:
            best, best_ms = name, ms
    if best == "fp32":
        why = f"no lower precision was >{min_gain:.0%} faster"
    else:
        why = f"{best} {fp32 / best_ms:.2f}x faster than fp32"
    return Precision(best, f"auto (measured): {summary}; {why}")


def cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "accelab"
    return Path(root) / "precision.json"


def cache_key(model: nn.Module, batch: tuple[Tensor, Tensor], device: torch.device) -> str:
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    text = json.dumps(
        [type(model).__name__, shapes, list(batch[0].shape), device_name(device),
         torch.__version__, torch.get_num_threads()], default=str,
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def auto_precision(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    device: torch.device,
) -> Precision:
    """``auto``: measured once per model shape/batch/device/torch version, then cached."""
    key, path = cache_key(model, batch, device), cache_file()
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(path.read_text()).get(key)
        if cached:
            return Precision(cached["name"], cached["reason"] + " [cached]")
    choice = choose(measure_precisions(model, batch, loss_fn, device))
    with contextlib.suppress(OSError, ValueError):
        path.parent.mkdir(parents=True, exist_ok=True)
        table = json.loads(path.read_text()) if path.is_file() else {}
        table[key] = {"name": choice.name, "reason": choice.reason}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1))
        tmp.replace(path)  # atomic: concurrent workers never read half a file
    return choice


def resolve_precision(
    requested: str,
    device: torch.device,
    model: nn.Module | None = None,
    batch: tuple[Tensor, Tensor] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Precision:
    """Turn ``auto|fp32|bf16|fp16`` into a concrete choice and say why."""
    if requested != "auto":
        return Precision(requested, "requested in config")
    if model is None or batch is None or loss_fn is None:
        return Precision("fp32", "auto without a model to measure: fp32")
    return auto_precision(model, batch, loss_fn, device)
