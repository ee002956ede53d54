"""Does fine-tuning recover a pruned model? The measurements behind the fine-tune defaults.

    python benchmarks/finetune_recovery.py [--seeds 0 1] [--epochs 4]
    python benchmarks/finetune_recovery.py --models "mlp 300-100" --cases unstructured95 \
        --settings 4 --seeds 0 1 2 --distill 0.5 2.0   # plain vs distilled, side by side

Trains dense digits models in this process with accelab's training loop (``fit``), then
prunes and fine-tunes them through the same hooks the Ray Train workers use
(``CompressionHooks``: cubic gradual pruning, masks kept after every step) under several
fine-tune settings, and prints test accuracy drops (points; negative = better than dense)
side by side. DDP on 2 workers x batch 32 is emulated by batch 64 in one process (the
same number of optimizer steps per epoch). ``--distill WEIGHT T`` adds a column: the same
fine-tune (same epochs, seeds, dense model) with ``finetune.distill``, the dense model as
teacher, through the hooks' own ``batch_loss``.
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
CASES = {
    "unstructured90": ("unstructured", 0.9, "cubic"),
    "unstructured95": ("unstructured", 0.95, "cubic"),
    "structured50": ("structured", 0.5, "oneshot"),
}


def config(
    model: str, args: dict, method: str, sparsity: float, schedule: str, s: dict, epochs: int,
    distill: dict | None = None,
):  # fmt: skip
    return ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": model, "model_args": args},
        "train": {"batch_size": 64},
        "compression": {"prune": {"method": method, "sparsity": sparsity, "schedule": schedule,
                                  "ramp_fraction": s["ramp"], "prune_output_layer": s["out"]}},
        "finetune": {"epochs": epochs, "lr": s["lr"], "schedule": s["schedule"],
                     "distill": distill or {}},
    })  # fmt: skip


def drop_after_finetune(dense, base: float, splits, seed: int, cfg: ExperimentConfig) -> float:
    """Prune ``dense`` as ``cfg`` says, fine-tune through the workers' hooks, return the
    test accuracy drop in points."""
    model_name, model_args, f = cfg.trainable.model, cfg.trainable.model_args, cfg.finetune
    with tempfile.TemporaryDirectory() as tmp:
        save_model(dense, Path(tmp, "w.safetensors"))
        hooks = CompressionHooks(cfg.model_dump(mode="json"), str(Path(tmp, "w.safetensors")),
                                 steps_per_epoch=20)  # fmt: skip
        model = hooks.transform(TASK.build_model(model_name, **model_args), TASK)
        fit(model, splits.train, f.epochs, loss=TASK.loss, lr=f.lr, batch_size=64, seed=seed,
            schedule=f.schedule, after_step=hooks.after_step,
            batch_loss=hooks.batch_loss(TASK, torch.device("cpu")))  # fmt: skip
    return (base - evaluate(model, splits.test, TASK)) * 100


def summary(drops: list[float]) -> str:
    return f"{statistics.median(drops):+6.2f} pts (" + ", ".join(f"{d:+.2f}" for d in drops) + ")"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=4, help="fine-tune epochs")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument(
        "--settings",
        type=int,
        nargs="+",
        default=list(range(len(SETTINGS))),
        help="indices into: "
        + "; ".join(f"{i}: {n}" for i, n in enumerate(SETTINGS)).replace("%", "%%"),
    )
    p.add_argument(
        "--distill",
        type=float,
        nargs=2,
        metavar=("WEIGHT", "T"),
        help="also fine-tune with finetune.distill {weight, temperature}",
    )
    args = p.parse_args()  # fmt: skip
    distill = (
        dict(zip(("weight", "temperature"), args.distill, strict=True)) if args.distill else None
    )
    splits = TASK.load_splits(0)
    print(f"digits test split: {len(splits.test)} images (1 image = {100 / len(splits.test):.2f} points); "
          f"fine-tune {args.epochs} epochs; median over seeds {args.seeds}"
          + (f"; distill {distill}" if distill else ""))  # fmt: skip
    for label in args.models:
        model_name, model_args = MODELS[label]
        dense = {}
        for seed in args.seeds:  # one dense model per seed, shared by every row and column
            torch.manual_seed(seed)
            model = fit(TASK.build_model(model_name, **model_args), splits.train, 8,
                        loss=TASK.loss, lr=1e-3, batch_size=32, seed=seed)  # fmt: skip
            dense[seed] = (model, evaluate(model, splits.test, TASK))
        for case in args.cases:
            method, sparsity, schedule = CASES[case]
            print(f"\n{label}, {method} {sparsity:.0%} ({schedule}):")
            for index in args.settings:
                name = list(SETTINGS)[index]
                s = SETTINGS[name]
                columns = {"plain": None, **({"distill": distill} if distill else {})}
                cells = []
                for column, d in columns.items():
                    cfg = config(model_name, model_args, method, sparsity, schedule, s,
                                 args.epochs, d)  # fmt: skip
                    drops = [drop_after_finetune(*dense[seed], splits, seed, cfg)
                             for seed in args.seeds]  # fmt: skip
                    cells.append(f"{column} drop {summary(drops)}")
                print(f"  {name:<55} " + "  |  ".join(cells))


if __name__ == "__main__":
    main()
