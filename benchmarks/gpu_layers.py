"""accelab's own GPU code paths on one CUDA device, without Ray or MLflow.

    PYTHONPATH=platform:. python benchmarks/gpu_layers.py --device cuda
    PYTHONPATH=platform:. python benchmarks/gpu_layers.py --device cpu --quick   (tiny: imports)

``benchmarks/gpu.sh`` runs the real commands (Ray Train, Ray Tune, MLflow); a machine that
has a GPU but neither Ray nor MLflow (no network to install them) can still check the
layers those commands stand on, with the experiment of ``benchmarks/gpu.yaml``
(``accelab.config.loader``: the schema only, no preflight, no engine):

1. ``train.precision: auto``: ``accelab.training.precision.resolve_precision`` times fp32,
   bf16 and fp16 training steps of the real model and batch on the device (a fresh cache
   folder, so it measures) and says what it chose and why.
2. Training: the byte-level GPT trained for a few hundred steps with
   ``accelab.training.epoch.train_one_epoch`` (the step code every Ray Train rank runs; the
   Ray worker loop around it, ``training.loop``, needs ``ray.train`` and is not used), in
   fp32, bf16 and fp16 with GradScaler, from the same initial weights and batches:
   training loss per chunk of steps, validation loss before and after, GradScaler's skips.
3. Latency: ``accelab.compress.pipeline.finalize`` (the sweep's deployable: fp32, bf16,
   torchao int8 / int4 weight-only when torchao imports) timed with
   ``accelab.measure.latency.time_runners`` on the device (synchronised, interleaved
   blocks), the speedup against fp32 with its 95% interval, and each variant's validation
   perplexity (``accelab.measure.quality``) with its paired change against fp32.

A failure in one part is printed and the others still run; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from accelab.config.loader import load_config
from accelab.config.schema import ExperimentConfig, QuantConfig
from accelab.host import device_name
from accelab.training.epoch import EpochContext, build_optimizer, build_scheduler, train_one_epoch
from accelab.training.precision import CACHE_ENV, Precision, candidates, resolve_precision
from trainables.base import Splits, examples_of
from trainables.pylm import TASK

CONFIG = Path(__file__).resolve().parent / "gpu.yaml"
QUICK = [  # tiny sizes: the CPU run only checks that every part imports and runs
    "trainable.model_args={n_layer: 1, n_head: 2, d_model: 32, mlp_ratio: 2}",
    "train.batch_size=8",
    "measure.batch_size=8",
    "measure.max_seconds=1",
    "measure.min_blocks=6",
    "measure.warmup=2",
]
FAILURES: list[str] = []


def say(title: str) -> None:
    print(f"\n== {title} ({time.strftime('%H:%M:%S', time.gmtime())} UTC)", flush=True)


@contextlib.contextmanager
def part(name: str) -> Iterator[None]:
    """Run one part; a failure is printed with its traceback and recorded, not raised."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001  (report every part, whatever breaks one)
        traceback.print_exc()
        FAILURES.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"FAILED {name}: {type(exc).__name__}: {exc}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def new_model(cfg: ExperimentConfig, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TASK.build_model(cfg.trainable.model, **cfg.trainable.model_args)


def environment(device: torch.device, cfg: ExperimentConfig) -> None:
    say("environment")
    print(f"python {sys.version.split()[0]} | torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}) | device {device}: {device_name(device)}")  # fmt: skip
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        print(f"{p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB, "
              f"capability {p.major}.{p.minor}, bf16 supported: "
              f"{torch.cuda.is_bf16_supported()}, TF32 matmul: "
              f"{torch.backends.cuda.matmul.allow_tf32}, float32 matmul precision: "
              f"{torch.get_float32_matmul_precision()}")  # fmt: skip
    flags = {k: v for k, v in os.environ.items() if "TF32" in k or k.startswith("CUBLAS")}
    print(f"TF32/cuBLAS environment: {flags or 'none set'}")  # an override beats allow_tf32
    try:
        import torchao

        print(f"torchao {torchao.__version__}")
    except ImportError as exc:
        print(f"torchao not importable ({exc}): its backends are skipped")
    model = new_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: pylm {cfg.trainable.model} {cfg.trainable.model_args}, {params / 1e6:.2f}M "
          f"parameters; batch {cfg.train.batch_size} x {TASK.input_shape[0]} bytes")  # fmt: skip


def auto_precision(cfg: ExperimentConfig, splits: Splits, device: torch.device) -> Precision:
    say(f"1. train.precision=auto on {device} (candidates {candidates(device)})")
    batch = examples_of(splits.train, cfg.train.batch_size)  # what training.loop times
    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get(CACHE_ENV)
        os.environ[CACHE_ENV] = cache  # an empty cache: measured here, never read back
        try:
            start = time.perf_counter()
            choice = resolve_precision("auto", device, new_model(cfg), batch, TASK.loss)
            seconds = time.perf_counter() - start
        finally:
            if previous is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = previous
    print(f"chose {choice.name} in {seconds:.1f} s")
    print(f"why: {choice.reason}")
    return choice


def val_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Mean next-byte loss (nats) on held-out windows, in fp32."""
    model.eval()
    with torch.inference_mode():
        loss = sum(
            float(TASK.loss(model(x[i : i + 256].to(device)), y[i : i + 256].to(device)))
            * len(x[i : i + 256])
            for i in range(0, len(x), 256)
        )
    return loss / len(x)


def train(
    cfg: ExperimentConfig, splits: Splits, name: str, device: torch.device, steps: int, chunks: int
) -> tuple[nn.Module, bool]:
    """``steps`` optimizer steps of ``train_one_epoch`` in ``chunks`` equal loaders over the
    same shuffled windows for every precision; prints each chunk's mean loss and step time.
    Returns the model and whether the loss went down (training chunks and validation)."""
    precision = Precision(name, "gpu_layers")
    model = new_model(cfg).to(device)
    t = cfg.train
    optimizer = build_optimizer(t.optimizer, model.parameters(), t.lr, weight_decay=t.weight_decay)
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
    per_chunk = min(steps, len(splits.train) // t.batch_size) // chunks  # one pass at most
    ctx = EpochContext(
        model, [], optimizer, TASK.loss, precision, device,
        scheduler=build_scheduler(optimizer, t.schedule, per_chunk * chunks),
    )  # fmt: skip
    vx, vy = examples_of(splits.val, 1024)
    before = val_loss(model, vx, vy, device)
    losses = []
    line = f"  {name}: val loss {before:.3f} -> "
    for c in range(chunks):
        take = order[c * per_chunk * t.batch_size : (c + 1) * per_chunk * t.batch_size]
        ctx.loader = DataLoader(Subset(splits.train, take.tolist()), batch_size=t.batch_size)
        sync(device)
        start, first = time.perf_counter(), ctx.state["step"]
        loss, _ = train_one_epoch(ctx)
        sync(device)
        ms = (time.perf_counter() - start) * 1000 / (ctx.state["step"] - first)
        losses.append(loss)
        print(f"  {name} steps {c * per_chunk + 1:4d}-{(c + 1) * per_chunk:4d}: train loss "
              f"{loss:.3f}, {ms:6.2f} ms/step (data loading included)", flush=True)  # fmt: skip
    after = val_loss(model, vx, vy, device)
    scaler = ctx.scaler
    scale = f", GradScaler scale {scaler.get_scale():g}" if scaler.is_enabled() else ""
    finite = all(math.isfinite(v) for v in losses)
    down = finite and losses[-1] < losses[0] and after < before
    print(f"{line}{after:.3f} after {ctx.state['step']} steps; skipped steps "
          f"{ctx.state['skipped_steps']}{scale}; loss decreasing: {down}")  # fmt: skip
    return model, down


def training(cfg: ExperimentConfig, splits: Splits, device: torch.device, steps: int) -> nn.Module:
    names = ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]
    say(f"2. training with accelab.training.epoch.train_one_epoch on {device}: {steps} steps, "
        f"{cfg.train.optimizer} lr {cfg.train.lr} {cfg.train.schedule}, same init and batches")  # fmt: skip
    trained = None
    for name in names:
        with part(f"training {name}"):
            model, down = train(cfg, splits, name, device, steps, chunks=4)
            if not down:
                FAILURES.append(f"training {name}: loss did not decrease")
            if trained is None:  # fp32's weights: the latency part
                trained = model
    return trained


def latency(model: nn.Module, cfg: ExperimentConfig, splits: Splits, device: str) -> None:
    from accelab.compress.pipeline import Calibration, finalize
    from accelab.measure import GenerateRunner, TorchRunner
    from accelab.measure.latency import speedup, time_runners, timing
    from accelab.measure.model_stats import count_macs
    from accelab.measure.quality import drop, estimate, per_example

    m = cfg.measure
    say(f"3. latency on {device} with accelab.measure ({timing(m)}, warm-up {m.warmup})")
    calibration = Calibration(lambda: splits.train, m.batch_size)  # static int8 only: unused
    built = []
    for bits in [32, 16, 8, 4] if device == "cuda" else [32, 16, 8]:
        with part(f"finalize bits={bits}"):  # the sweep's deployable for compression.quant.bits
            d = finalize(model, QuantConfig(bits=bits), calibration, device)
            built.append(TorchRunner(d.model, d.backend, device, m.threads, d.simulated))
            print(f"  quant.bits={bits}: backend {d.backend} ({d.kind}), simulated: {d.simulated}")
    val = Subset(splits.val, range(min(len(splits.val), 1024 if device == "cuda" else 64)))
    base = None
    for runner in built:
        with part(f"quality {runner.backend}"):
            values = per_example(runner, val, TASK, batch_size=m.batch_size)
            ppl = estimate(values, TASK.metric)
            change = ""
            if base is None:
                base = values
            else:
                c = drop(base, values, TASK.metric)
                change = f", vs fp32 {c.value:+.2%} [{c.lo:+.2%}, {c.hi:+.2%}]"
            print(f"  {runner.backend}: val perplexity {ppl.value:.3f} "
                  f"[{ppl.lo:.3f}, {ppl.hi:.3f}] on {ppl.n} windows{change}")  # fmt: skip
    real = [r for r in built if not r.simulated]
    tokens = 32 if device == "cuda" else 4
    targets: list[tuple[str, Callable, int]] = [  # (title, runner wrapper, calls per timing)
        (f"forward pass, batch {m.batch_size}", lambda r: r, 1),
        (f"generation, batch 1, {tokens} bytes (per byte)", lambda r: GenerateRunner(r, tokens),
         tokens),
    ]  # fmt: skip
    x = examples_of(splits.test, m.batch_size)[0].to(device)
    flop = 2 * count_macs(copy.deepcopy(model).cpu(), x[:1].cpu()) * len(x)  # Linear layers
    print(f"  forward pass: {flop / 1e9:.0f} GFLOP in Linear layers (2 x MACs, batch {len(x)})")
    for title, wrap, scale in targets:
        with part(f"latency {title}"):
            runners = [wrap(r) for r in real]
            times = time_runners(runners, x, m)
            print(f"  {title}: {len(times[0].rounds_p50_ms)} blocks ({times[0].method})")
            for r, t in zip(runners, times, strict=True):
                s = speedup(times[0], t)
                print(f"    {r.backend:26s} p50 {t.p50_ms / scale:8.3f} ms  p95 "
                      f"{t.p95_ms / scale:8.3f} ms  speedup vs fp32 {s.value:.2f}x "
                      f"[{s.lo:.2f}, {s.hi:.2f}]"
                      + (f"  ~{flop / t.p50_ms / 1e9:.0f} TFLOP/s" if scale == 1 else ""))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU import check)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per precision")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="per latency target")
    a = parser.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"gpu_layers: torch {torch.__version__} sees no CUDA device (use --device cpu)")
    overrides = [f"measure.device={a.device}"]
    overrides += QUICK if a.quick else [f"measure.max_seconds={a.max_seconds}"]
    cfg = load_config(CONFIG, overrides)
    steps = a.steps or (8 if a.quick else 360)
    device = torch.device(a.device)
    start = time.perf_counter()
    environment(device, cfg)
    splits = TASK.load_splits(cfg.trainable.data_seed)
    with part("precision auto"):
        auto_precision(cfg, splits, device)
    model = training(cfg, splits, device, steps)
    if model is not None:
        with part("latency"):
            latency(model, cfg, splits, a.device)
    say(f"done in {time.perf_counter() - start:.0f} s")
    for failure in FAILURES:
        print(f"FAILED {failure}")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
