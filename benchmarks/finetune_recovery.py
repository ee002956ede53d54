"""Does fine-tuning recover a pruned model? The measurements behind the fine-tune defaults.

    python benchmarks/finetune_recovery.py [--seeds 0 1] [--epochs 4]
    python benchmarks/finetune_recovery.py --models "mlp 300-100" --cases unstructured95 \
        --settings 4 --seeds 0 1 2 --distill 0.5 2.0   # plain vs distilled, side by side
    python benchmarks/finetune_recovery.py --models pylm "hf gpt2" --cases dense heads25 \
        heads50 --settings 4 --epochs 1 --seeds 0 1 2 --distill 0.5 2.0 --device cuda
        # transformers: "dense" is the control (the dense model fine-tuned as long)

Trains dense models (digits; pylm: one epoch) in this process with accelab's training loop (``fit``), then
prunes and fine-tunes them through the same hooks the Ray Train workers use
(``CompressionHooks``: cubic gradual pruning, masks kept after every step) under several
fine-tune settings, and prints test accuracy drops (points; negative = better than dense)
side by side: digits in test-accuracy points, pylm in % of test perplexity (both: higher =
worse). DDP on 2 workers x batch 32 is emulated by batch 64 in one process (the same
number of optimizer steps per epoch). ``--distill WEIGHT T`` adds a column: the same
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
from accelab.tasks import resolve_task
from accelab.training.checkpoint import save_model
from accelab.training.epoch import fit
from trainables import digits, pylm

PYLM = {"n_layer": 2, "n_head": 4, "d_model": 128, "mlp_ratio": 4}  # configs/pylm.yaml
MODELS = {  # label -> (task, model, model_args, dense epochs, dense lr)
    "mlp 300-100": (digits.TASK, "mlp", {"hidden": [300, 100]}, 8, 1e-3),
    "mlp 1024-1024": (digits.TASK, "mlp", {"hidden": [1024, 1024]}, 8, 1e-3),
    "cnn": (digits.TASK, "cnn", {}, 8, 1e-3),
    "pylm": (pylm.TASK, "gpt", PYLM, 1, 3e-3),
    # Hugging Face GPT-2 (fused c_attn/c_proj heads) the size of configs/hf_causal_lm.yaml's Llama
    "hf gpt2": (
        "hf_causal_lm",
        "causal_lm",
        {"config": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4}},
        1,
        3e-3,
    ),
}
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
    "dense": ("none", 0.0, "oneshot"),  # the control: the dense model fine-tuned as long
    "unstructured90": ("unstructured", 0.9, "cubic"),
    "unstructured95": ("unstructured", 0.95, "cubic"),
    "structured50": ("structured", 0.5, "oneshot"),
    "heads25": ("heads", 0.25, "oneshot"),  # transformers (pylm)
    "heads50": ("heads", 0.5, "oneshot"),
}


def config(
    task: str, model: str, args: dict, method: str, sparsity: float, schedule: str, s: dict,
    epochs: int, distill: dict | None = None,
):  # fmt: skip
    return ExperimentConfig.model_validate({
        "trainable": {"name": task, "model": model, "model_args": args},
        "train": {"batch_size": 64},
        "compression": {"prune": {"method": method, "sparsity": sparsity, "schedule": schedule,
                                  "ramp_fraction": s["ramp"], "prune_output_layer": s["out"]}},
        "finetune": {"epochs": epochs, "lr": s["lr"], "schedule": s["schedule"],
                     "distill": distill or {}},
    })  # fmt: skip


def worse_by(task, base: float, value: float) -> float:
    """How much worse ``value`` is than ``base``: accuracy points, or % of perplexity."""
    if task.metric.higher_is_better:
        return (base - value) * 100
    return (value / base - 1) * 100


def drop_after_finetune(
    task, dense, base: float, splits, seed: int, cfg: ExperimentConfig, device: str = "cpu"
) -> float:  # fmt: skip
    """Prune ``dense`` as ``cfg`` says, fine-tune through the workers' hooks, return how
    much worse than dense it is on the test split (``worse_by``)."""
    model_name, model_args, f = cfg.trainable.model, cfg.trainable.model_args, cfg.finetune
    with tempfile.TemporaryDirectory() as tmp:
        save_model(dense, Path(tmp, "w.safetensors"))
        hooks = CompressionHooks(cfg.trainable, cfg.compression, cfg.finetune, 64,
                                 str(Path(tmp, "w.safetensors")),
                                 steps_per_epoch=max(1, len(splits.train) // 64))  # fmt: skip
        model = hooks.transform(task.build_model(model_name, **model_args), task)
        fit(model, splits.train, f.epochs, loss=task.loss, lr=f.lr, batch_size=64, seed=seed,
            schedule=f.schedule, after_step=hooks.after_step, device=device,
            batch_loss=hooks.batch_loss(task, torch.device(device)))  # fmt: skip
    return worse_by(task, base, evaluate(model, splits.test, task))


def summary(drops: list[float]) -> str:
    return f"{statistics.median(drops):+6.2f} (" + ", ".join(f"{d:+.2f}" for d in drops) + ")"


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
    p.add_argument(
        "--device",
        default="cpu",
        help="train and fine-tune on this device (cuda: heads/structured/cubic cases "
        "only; quality is always measured on the CPU)",
    )
    args = p.parse_args()  # fmt: skip
    distill = (
        dict(zip(("weight", "temperature"), args.distill, strict=True)) if args.distill else None
    )
    print(f"fine-tune {args.epochs} epochs; median over seeds {args.seeds}"
          + (f"; distill {distill}" if distill else ""))  # fmt: skip
    for label in args.models:
        task, model_name, model_args, dense_epochs, dense_lr = MODELS[label]
        task = resolve_task(task) if isinstance(task, str) else task
        splits = task.load_splits(0)
        unit = "points of accuracy" if task.metric.higher_is_better else "% of perplexity"
        print(f"\n{label}: {task.name} test split {len(splits.test)} examples; drops in {unit}")
        dense = {}
        for seed in args.seeds:  # one dense model per seed, shared by every row and column
            torch.manual_seed(seed)
            model = fit(task.build_model(model_name, **model_args), splits.train, dense_epochs,
                        loss=task.loss, lr=dense_lr, batch_size=32, seed=seed,
                        device=args.device)  # fmt: skip
            dense[seed] = (model, evaluate(model, splits.test, task))
            print(f"  dense seed {seed}: {task.metric.name} {dense[seed][1]:.4f}")
        for case in args.cases:
            method, sparsity, schedule = CASES[case]
            print(f"\n{label}, {method} {sparsity:.0%} ({schedule}):")
            for index in args.settings:
                name = list(SETTINGS)[index]
                s = SETTINGS[name]
                columns = {"plain": None, **({"distill": distill} if distill else {})}
                cells = []
                for column, d in columns.items():
                    cfg = config(task.name, model_name, model_args, method, sparsity, schedule,
                                 s, args.epochs, d)  # fmt: skip
                    drops = [drop_after_finetune(task, *dense[seed], splits, seed, cfg, args.device)
                             for seed in args.seeds]  # fmt: skip
                    cells.append(f"{column} drop {summary(drops)}")
                print(f"  {name:<55} " + "  |  ".join(cells))


if __name__ == "__main__":
    main()
