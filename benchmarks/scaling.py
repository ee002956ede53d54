"""Data-parallel scaling and mixed-precision memory, measured against the article's ideals.

    python benchmarks/scaling.py [--epochs 4] [--skip-memory] [--device cpu|cuda]

Scaling: ``accelab train`` (Ray Train DDP) on 1 and on 2 workers with the same global
batch (1 x 64 vs 2 x 32) and the same data, in alternating runs; the article's ideal is
T = N/P (P workers take 1/P of the time per epoch). Efficiency = T1 / (P * TP).

Memory: peak memory of training steps in fp32 against bf16 (and fp16 on CUDA) autocast, each
in a fresh process (CPU: the process's peak resident memory above an idle baseline; CUDA:
``torch.cuda.max_memory_allocated``). The article's ideal is M = S/F: storing numbers in F
times fewer bytes needs F times less memory. Autocast keeps fp32 master weights and
optimizer state, so only activations shrink.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEMORY_PROBE = """
import json, resource, sys, torch
from accelab.training.precision import Precision
from accelab.training.epoch import EpochContext, build_optimizer, train_one_epoch
from trainables.digits import build_mlp
name, device, width, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
dev = torch.device(device)
model = build_mlp([width] * 3).to(dev)
x = torch.randn(batch * 4, 1, 8, 8, device=dev); y = torch.randint(0, 10, (batch * 4,), device=dev)
loader = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ctx = EpochContext(model, loader, build_optimizer("adam", model.parameters(), 1e-3),
                   torch.nn.functional.cross_entropy, Precision(name, "benchmark"), dev)
train_one_epoch(ctx)
peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
params = sum(p.numel() for p in model.parameters())
print(json.dumps({"peak_bytes": peak, "params": params}))
"""


def train_epoch_s(workers: int, epochs: int, model: str) -> float:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/mlflow.db"
        batch = 64 // workers  # the same global batch: the same work per epoch
        proc = subprocess.run(
            ["accelab", "train", str(REPO / "configs" / "digits.yaml"), f"trainable.model={model}",
             f"scaling.num_workers={workers}", f"train.batch_size={batch}", f"train.epochs={epochs}",
             "train.precision=fp32", f"tracking.uri={db}", f"run.storage_path={tmp}/r"]
            + (["trainable.model_args={hidden: [1024, 1024]}"] if model == "mlp" else []),
            cwd=tmp, capture_output=True, text=True, check=True,
        )  # fmt: skip
        run_id = proc.stdout.split("MLflow run ")[-1].split(";")[0].strip()
        history = MlflowClient(db).get_metric_history(run_id, "epoch_s")
        return statistics.median(m.value for m in history if m.step > 0)  # epoch 1 warms up


def memory(precision: str, device: str, width: int, batch: int) -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, precision, device, str(width), str(batch)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", default="scaling.json")
    args = p.parse_args()
    report: dict = {}
    if not args.skip_scaling:
        print(
            "data-parallel scaling (accelab train, same global batch 64, fp32, median epoch time):"
        )
        for model in ("cnn", "mlp"):
            one, two = [], []
            for _ in range(args.rounds):
                one.append(train_epoch_s(1, args.epochs, model))
                two.append(train_epoch_s(2, args.epochs, model))
            t1, t2 = statistics.median(one), statistics.median(two)
            efficiency = t1 / (2 * t2)
            report[f"scaling_{model}"] = {"t1_s": t1, "t2_s": t2, "speedup": t1 / t2,
                                          "efficiency": efficiency, "ideal_t2_s": t1 / 2}  # fmt: skip
            print(f"  {model}: 1 worker {t1:.3f} s/epoch, 2 workers {t2:.3f} s/epoch (ideal T=N/P: "
                  f"{t1 / 2:.3f}); speedup {t1 / t2:.2f}x, efficiency {efficiency:.0%}")  # fmt: skip
    if not args.skip_memory:
        names = ["fp32", "bf16"] + (["fp16"] if args.device == "cuda" else [])
        print(f"\npeak training memory ({args.device}, MLP 3 x 4096, batch 1024, Adam):")
        rows = {n: memory(n, args.device, 4096, 1024) for n in names}
        base = rows["fp32"]["peak_bytes"]
        for n, r in rows.items():
            print(f"  {n}: {r['peak_bytes'] / 2**20:,.0f} MiB ({r['peak_bytes'] / base:.2f}x of fp32; "
                  f"ideal M=S/F: {1.0 if n == 'fp32' else 0.5:.2f}x)")  # fmt: skip
        report["memory"] = {"device": args.device, **rows}
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
