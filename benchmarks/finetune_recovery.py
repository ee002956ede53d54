"""Does fine-tuning recover a pruned model? The measurements behind the fine-tune defaults.

    python benchmarks/finetune_recovery.py [--seeds 0 1] [--epochs 4]

Trains dense digits models in this process with accelab's training loop (``fit``), then
prunes and fine-tunes them through the same hooks the Ray Train workers use
(``CompressionHooks``: cubic gradual pruning, masks kept after every step) under several
fine-tune settings, and prints test accuracy drops (points; negative = better than dense)
side by side. DDP on 2 workers x batch 32 is emulated by batch 64 in one process (the
same number of optimizer steps per epoch).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from accelab.compress.pipeline import CompressionHooks
from accelab.config.schema import ExperimentConfig
from accelab.measure import evaluate
from accelab.training.checkpoint import save_model
from accelab.training.epoch import fit
from trainables.digits import TASK

MODELS = {"mlp 300-100": ("mlp", {"hidden": [300, 100]}), "mlp 1024-1024": ("mlp", {"hidden": [1024, 1024]}),
          "cnn": ("cnn", {})}  # fmt: skip
SETTINGS = {  # name -> fine-tune overrides
    "old defaults (lr 1e-4 const, ramp 75%, output pruned)": dict(lr=1e-4, schedule="constant", ramp=0.75, out=True),
    "lr 1e-3 const, ramp 75%, output pruned": dict(lr=1e-3, schedule="constant", ramp=0.75, out=True),
    "lr 1e-3 cosine, ramp 75%, output kept": dict(lr=1e-3, schedule="cosine", ramp=0.75, out=False),
    "lr 1e-3 cosine, ramp 50%, output kept (new)": dict(lr=1e-3, schedule="cosine", ramp=0.5, out=False),
    "lr 2e-3 cosine, ramp 50%, output kept": dict(lr=2e-3, schedule="cosine", ramp=0.5, out=False),
    "lr 2e-3 cosine, ramp 40%, output kept": dict(lr=2e-3, schedule="cosine", ramp=0.4, out=False),
    "lr 3e-3 cosine, ramp 50%, output kept": dict(lr=3e-3, schedule="cosine", ramp=0.5, out=False),
}  # fmt: skip
CASES = (
    ("unstructured", 0.9, "cubic"),
    ("unstructured", 0.95, "cubic"),
    ("structured", 0.5, "oneshot"),
)


def config(
    model: str, args: dict, method: str, sparsity: float, schedule: str, s: dict, epochs: int
):
    return ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": model, "model_args": args},
        "train": {"batch_size": 64},
        "compression": {"prune": {"method": method, "sparsity": sparsity, "schedule": schedule,
                                  "ramp_fraction": s["ramp"], "prune_output_layer": s["out"]}},
        "finetune": {"epochs": epochs, "lr": s["lr"], "schedule": s["schedule"]},
    })  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=4, help="fine-tune epochs")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = p.parse_args()
    splits = TASK.load_splits(0)
    print(f"digits test split: {len(splits.test)} images (1 image = {100 / len(splits.test):.2f} points); "
          f"fine-tune {args.epochs} epochs; median over seeds {args.seeds}")  # fmt: skip
    for label in args.models:
        model_name, model_args = MODELS[label]
        for method, sparsity, schedule in CASES:
            print(f"\n{label}, {method} {sparsity:.0%} ({schedule}):")
            for name, s in SETTINGS.items():
                drops = []
                for seed in args.seeds:
                    torch.manual_seed(seed)
                    dense = fit(TASK.build_model(model_name, **model_args), splits.train, 8,
                                loss=TASK.loss, lr=1e-3, batch_size=32, seed=seed)  # fmt: skip
                    base = evaluate(dense, splits.test, TASK)
                    cfg = config(model_name, model_args, method, sparsity, schedule, s, args.epochs)
                    with tempfile.TemporaryDirectory() as tmp:
                        save_model(dense, Path(tmp, "w.safetensors"))
                        hooks = CompressionHooks(cfg.model_dump(mode="json"), str(Path(tmp, "w.safetensors")),
                                                 steps_per_epoch=20)  # fmt: skip
                        model = hooks.transform(TASK.build_model(model_name, **model_args), TASK)
                        fit(model, splits.train, args.epochs, loss=TASK.loss, lr=s["lr"], batch_size=64,
                            seed=seed, schedule=s["schedule"], after_step=hooks.after_step)  # fmt: skip
                    drops.append((base - evaluate(model, splits.test, TASK)) * 100)
                print(f"  {name:<55} drop {statistics.median(drops):+6.2f} pts  (seeds: "
                      + ", ".join(f"{d:+.2f}" for d in drops) + ")")  # fmt: skip


if __name__ == "__main__":
    main()
