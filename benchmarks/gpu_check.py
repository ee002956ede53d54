"""GPU check (one short run on a CUDA machine; also runs on CPU for a dry run).

What it verifies on real hardware, side by side in one process:
  1. precision "auto" resolves to bf16 on a CUDA device with bf16 support (and why);
  2. the training loop's AMP idiom (accelab.precision: autocast + GradScaler) trains the
     digits CNN in fp32 / bf16 / fp16: time per epoch and held-out test accuracy;
  3. fp16's GradScaler skips a step with an injected inf gradient (weights unchanged);
  4. accelab.measure on CUDA: dense fp32 vs structured-pruned 50% vs bf16 weights of a
     Linear-heavy MLP, latency medians after warm-up with CUDA synchronisation.

    python benchmarks/gpu_check.py [--out results.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import torch
from accelab.precision import resolve_precision
from torch import nn

from accelab.compress.prune import apply_structured
from accelab.measure import measure
from trainables.digits import TASK


def train_epochs(precision_name: str, device: torch.device, epochs: int = 3) -> dict:
    torch.manual_seed(0)
    splits = TASK.load_splits(0)
    model = TASK.build_model("cnn").to(device)
    precision = resolve_precision(precision_name, device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    scaler = precision.grad_scaler(device)
    x_all, y_all = (t.to(device) for t in splits.train.tensors)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        perm = torch.randperm(len(x_all), device=device)
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            opt.zero_grad(set_to_none=True)
            with precision.autocast(device):
                loss = loss_fn(model(x_all[idx]), y_all[idx])
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad(), precision.autocast(device):
        xt, yt = (t.to(device) for t in splits.test.tensors)
        acc = float((model(xt).argmax(1) == yt).float().mean())
    return {
        "precision": precision.name,
        "reason": precision.reason,
        "epoch_s_median": sorted(times)[len(times) // 2],
        "test_accuracy": acc,
    }


def inf_step_skipped(device: torch.device) -> dict:
    model = TASK.build_model("mlp", hidden=[64]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = resolve_precision("fp16", device)
    scaler = precision.grad_scaler(device)
    x = torch.rand(8, 1, 8, 8, device=device)
    y = torch.randint(0, 10, (8,), device=device)
    with precision.autocast(device):
        loss = nn.functional.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    next(model.parameters()).grad.fill_(math.inf)
    before = [p.detach().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    unchanged = all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    return {
        "weights_unchanged": unchanged,
        "scale_before": scale,
        "scale_after": scaler.get_scale(),
    }


def latency_table(device: torch.device, batch: int = 256) -> list[dict]:
    torch.manual_seed(0)
    test = TASK.load_splits(0).test
    dense = TASK.build_model("mlp", hidden=[4096, 4096]).eval()
    pruned = apply_structured(copy.deepcopy(dense), 0.5, TASK.example_input(1)).eval()
    bf16 = copy.deepcopy(dense).to(torch.bfloat16)
    rows = []
    for name, model, backend in (
        ("dense fp32", dense, "fp32-dense"),
        ("structured 50%", pruned, "fp32-dense"),
        ("bf16 weights", bf16, "bf16-dense"),
    ):
        model = model.to(device)
        data = (
            test
            if name != "bf16 weights"
            else torch.utils.data.TensorDataset(test.tensors[0].to(torch.bfloat16), test.tensors[1])
        )
        m = measure(
            model,
            data,
            backend=backend,
            simulated=False,
            batch_size=batch,
            warmup=20,
            repeats=100,
            device=str(device),
        )
        rows.append(
            {
                "variant": name,
                "p50_ms": m.latency_p50_ms,
                "p95_ms": m.latency_p95_ms,
                "params": m.params,
                "accuracy_untrained": m.accuracy,
            }
        )
    for r in rows:
        r["speedup"] = rows[0]["p50_ms"] / r["p50_ms"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "auto": resolve_precision("auto", device).__dict__,
        "training": [train_epochs(p, device) for p in ("fp32", "bf16", "fp16")],
        "fp16_inf_step": inf_step_skipped(device),
        "latency": latency_table(device),
    }
    print(json.dumps(report, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
