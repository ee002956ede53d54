"""Honest measurement of a (compressed) model: test accuracy, latency, size, MACs.

Latency is measured with the real kernels after warm-up, as median (p50) and p95 of
repeated runs, with the backend named. Simulated configurations (fake quantization)
get real accuracy but no latency or throughput ("n/a"), never a speedup.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from accelab.compress.quant import (
    FAKE_QUANT_TYPES,
    DynamicQuantizedLinear,
    fake_quant_report,
    has_fake_quant,
    quiet_quantization_warnings,
)

_MAC_TYPES = (nn.Linear, nn.Conv2d, DynamicQuantizedLinear, *FAKE_QUANT_TYPES)


@dataclass(frozen=True)
class Measurement:
    """One model's measured numbers; latency/throughput are None when simulated."""

    accuracy: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    throughput_sps: float | None
    params: int
    nonzero_params: int
    size_bytes: int
    macs: int
    backend: str
    simulated: bool
    device: str
    threads: int
    batch_size: int

    def to_metrics(self) -> dict[str, float | str]:
        """Flat dict for MLflow: numbers as float (``simulated`` as 0/1), missing speed as
        ``"n/a"``; the str values (backend, device, "n/a") belong in params or tags."""
        out: dict[str, float | str] = {}
        for key, value in asdict(self).items():
            if value is None:
                out[key] = "n/a"
            elif isinstance(value, str):
                out[key] = value
            else:
                out[key] = float(value)
        return out


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def evaluate_accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy on ``dataset`` (eval mode, no grad)."""
    device = _model_device(model)
    correct = total = 0
    with _eval_mode(model), torch.inference_mode():
        for x, y in DataLoader(dataset, batch_size=batch_size):
            pred = model(x.to(device)).argmax(dim=1)
            correct += int((pred.cpu() == y).sum())
            total += len(y)
    return correct / total


def _sync(x: Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def measure_latency(
    model: nn.Module,
    example_batch: Tensor,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
) -> tuple[float, float]:
    """(p50, p95) milliseconds of one forward pass on ``example_batch`` after ``warmup`` runs.

    ``threads`` sets torch's intra-op threads for the measurement only.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    previous_threads = torch.get_num_threads()
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with _eval_mode(model), torch.inference_mode():
            for _ in range(warmup):
                model(example_batch)
            _sync(example_batch)
            for _ in range(repeats):
                start = time.perf_counter()
                model(example_batch)
                _sync(example_batch)
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous_threads)
    p50, p95 = torch.tensor(times, dtype=torch.float64).quantile(
        torch.tensor([0.5, 0.95], dtype=torch.float64)
    )
    return float(p50), float(p95)


def _weight_of(module: nn.Module) -> Tensor:
    if isinstance(module, FAKE_QUANT_TYPES):
        return module.layer.weight
    if isinstance(module, DynamicQuantizedLinear):
        return module.weight()
    return module.weight


def count_macs(model: nn.Module, example_input: Tensor) -> int:
    """Multiply-accumulates of Linear/Conv2d layers (float, fake-quant or int8) for one
    forward pass on ``example_input``; sparse weights count as dense (dense kernels)."""
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        nonlocal total
        weight = _weight_of(module)
        total += output.numel() * (weight.numel() // weight.shape[0])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _MAC_TYPES)]
    try:
        with _eval_mode(model), torch.inference_mode():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return total


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting int8 packed weights and biases too."""
    tensors = [p.detach() for p in model.parameters()]
    for module in model.modules():
        if isinstance(module, DynamicQuantizedLinear):
            tensors.append(module.weight().dequantize())
            if module.bias() is not None:
                tensors.append(module.bias().detach())
    return sum(t.numel() for t in tensors), sum(int(torch.count_nonzero(t)) for t in tensors)


def saved_size_bytes(model: nn.Module) -> int:
    """Bytes of the serialized deployable state_dict; packed low-bit size for fake-quant."""
    if has_fake_quant(model):
        return int(fake_quant_report(model)["packed_size_bytes"])
    buffer = io.BytesIO()
    with quiet_quantization_warnings():
        torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def measure(
    model: nn.Module,
    test_set: Dataset,
    *,
    backend: str,
    simulated: bool,
    batch_size: int = 64,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
    size_bytes: int | None = None,
    device: str = "cpu",
) -> Measurement:
    """Accuracy on ``test_set`` plus latency (unless simulated), size, params and MACs."""
    if not simulated and has_fake_quant(model):
        raise ValueError(
            "fake-quant models have no real low-bit kernel; measure them with simulated=True"
        )
    model = model.to(device)
    batch = next(iter(DataLoader(test_set, batch_size=batch_size)))[0].to(device)
    p50 = p95 = throughput = None
    if not simulated:
        p50, p95 = measure_latency(model, batch, warmup, repeats, threads)
        throughput = len(batch) / (p50 / 1000.0)
    params, nonzero = count_params(model)
    return Measurement(
        accuracy=evaluate_accuracy(model, test_set),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        throughput_sps=throughput,
        params=params,
        nonzero_params=nonzero,
        size_bytes=size_bytes if size_bytes is not None else saved_size_bytes(model),
        macs=count_macs(model, batch[:1]),
        backend=backend,
        simulated=simulated,
        device=str(device),
        threads=threads if threads is not None else torch.get_num_threads(),
        batch_size=len(batch),
    )


def compare(baseline: Measurement, m: Measurement) -> dict[str, float | None]:
    """speedup (baseline p50 / p50; None if either is simulated), size_ratio, and
    accuracy_drop (baseline - m, as a fraction)."""
    timed = baseline.latency_p50_ms is not None and m.latency_p50_ms is not None
    return {
        "speedup": baseline.latency_p50_ms / m.latency_p50_ms if timed else None,
        "size_ratio": m.size_bytes / baseline.size_bytes,
        "params_ratio": m.params / baseline.params if baseline.params else None,
        "accuracy_drop": baseline.accuracy - m.accuracy,
    }


def measure_pair(
    baseline_model: nn.Module,
    model: nn.Module,
    test_set: Dataset,
    *,
    backend: str,
    simulated: bool,
    baseline_backend: str = "fp32-dense",
    rounds: int = 3,
    batch_size: int = 64,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
    size_bytes: int | None = None,
    device: str = "cpu",
) -> tuple[Measurement, Measurement]:
    """Baseline and variant measured side by side: latency in alternating rounds
    (baseline, variant, baseline, ...), each reported as the median over rounds of the
    per-round p50/p95, so that a noisy neighbour slows both rather than one."""
    common = {
        "batch_size": batch_size,
        "threads": threads,
        "warmup": warmup,
        "repeats": repeats,
        "device": device,
    }
    base = measure(baseline_model, test_set, backend=baseline_backend, simulated=False, **common)
    var = measure(
        model, test_set, backend=backend, simulated=simulated, size_bytes=size_bytes, **common
    )
    batch = next(iter(DataLoader(test_set, batch_size=batch_size)))[0].to(device)
    base_rounds, var_rounds = (
        [(base.latency_p50_ms, base.latency_p95_ms)],
        [(var.latency_p50_ms, var.latency_p95_ms)],
    )
    for _ in range(rounds - 1):
        base_rounds.append(measure_latency(baseline_model, batch, warmup, repeats, threads))
        if not simulated:
            var_rounds.append(measure_latency(model, batch, warmup, repeats, threads))

    def med(values: list[tuple[float, float]], i: int) -> float:
        return float(torch.tensor([v[i] for v in values], dtype=torch.float64).median())

    base = replace(base, latency_p50_ms=med(base_rounds, 0), latency_p95_ms=med(base_rounds, 1))
    base = replace(base, throughput_sps=base.batch_size / (base.latency_p50_ms / 1000.0))
    if not simulated:
        var = replace(var, latency_p50_ms=med(var_rounds, 0), latency_p95_ms=med(var_rounds, 1))
        var = replace(var, throughput_sps=var.batch_size / (var.latency_p50_ms / 1000.0))
    return base, var
