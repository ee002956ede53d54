"""Side-by-side compression benchmark on a Linear-heavy digits MLP, in one process.

    python benchmarks/compression.py [--hidden 2048 2048] [--batch-size 64] [--threads 2]
                                     [--method blocks|rounds] [--epochs 5]

Trains the MLP with accelab's training loop (``training.epoch.fit``), then measures every
compressed variant against the dense fp32 model with ``accelab.measure.measure_pair``
(the one timing method of the package; ``--method rounds``: the old one): interleaved
blocks, the speedup as the median of the paired block ratios with its 95% interval, the
accuracy drop as a paired 95% interval on the
same test images. Fake-quant rows are simulated: real accuracy and a computed packed size,
no speed.
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from accelab.backends import SIMULATED, TORCH_FP32, TORCH_INT8
from accelab.compress import (
    apply_structured,
    apply_unstructured,
    convert_int8_dynamic,
    prepare_fake_quant,
)
from accelab.config.schema import MeasureConfig
from accelab.measure import Comparison, Measurement, TorchRunner, measure_pair
from accelab.measure.latency import timing
from accelab.training.epoch import fit
from trainables.digits import TASK


@dataclass
class Variant:
    name: str
    backend: str
    build: Callable[[nn.Module], nn.Module]
    simulated: bool = False


def variants(args: argparse.Namespace, train_set: TensorDataset) -> list[Variant]:
    example = TASK.example_input(1)

    def structured(ratio: float, finetune: int) -> Callable[[nn.Module], nn.Module]:
        def build(model: nn.Module) -> nn.Module:
            pruned = apply_structured(model, ratio, example)
            if finetune:
                fit(pruned, train_set, finetune, loss=TASK.loss, lr=2e-3, schedule="cosine")
            return pruned

        return build

    out = [Variant("dense fp32 (A/A)", TORCH_FP32, lambda m: m)]
    for sparsity in (0.5, 0.9):
        build = lambda m, s=sparsity: apply_unstructured(m, s)  # noqa: E731
        out.append(Variant(f"unstructured {sparsity:.0%}", TORCH_FP32, build))
    for ratio in (0.3, 0.5, 0.7):
        out.append(Variant(f"structured {ratio:.0%}", TORCH_FP32, structured(ratio, 0)))
        if args.finetune_epochs:
            name = f"structured {ratio:.0%} +ft{args.finetune_epochs}"
            out.append(Variant(name, TORCH_FP32, structured(ratio, args.finetune_epochs)))
    out.append(Variant("int8 dynamic", TORCH_INT8, convert_int8_dynamic))
    for bits in (4, 2):
        build = lambda m, b=bits: prepare_fake_quant(m, b)  # noqa: E731
        out.append(Variant(f"fake-quant {bits}-bit", SIMULATED, build, simulated=True))
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def row(name: str, base: Measurement, m: Measurement, c: Comparison) -> tuple[str, ...]:
    speed = (
        "n/a"
        if c.speedup is None
        else f"{c.speedup.value:.2f}x ({c.speedup.lo:.2f}-{c.speedup.hi:.2f})"
    )
    d = c.drop
    packed = "" if m.packed_size_bytes is None else f"{m.packed_size_bytes / 1024:,.1f}"
    return (
        name, m.backend, f"{m.quality.value:.4f}",
        f"{d.value * 100:+.2f} [{d.lo * 100:+.2f},{d.hi * 100:+.2f}]",
        _fmt(m.latency_p50_ms, ".3f"), f"{base.latency_p50_ms:.3f}", speed, f"{m.params:,}",
        f"{m.size_bytes / 1024:,.1f}", packed, "yes" if m.simulated else "no",
    )  # fmt: skip


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("variant", "backend", "accuracy", "drop pts [95% CI]", "p50 ms", "base ms",
              "speedup (min-max)", "params", "size KB", "packed KB", "simulated")  # fmt: skip
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        cells = (
            c.ljust(w) if j < 2 else c.rjust(w)
            for j, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, nargs="+", default=[2048, 2048])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="--method rounds: timing rounds")
    parser.add_argument("--method", choices=["blocks", "rounds"], default="blocks")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=1, help="0 skips fine-tuned rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    splits = TASK.load_splits(args.seed)
    dense = fit(TASK.build_model("mlp", hidden=args.hidden), splits.train, args.epochs,
                loss=TASK.loss, seed=args.seed, threads=args.threads)  # fmt: skip
    settings = MeasureConfig(batch_size=args.batch_size, threads=args.threads, warmup=args.warmup,
                             repeats=args.repeats, rounds=args.rounds, method=args.method)  # fmt: skip
    rows = []
    for v in variants(args, splits.train):
        model = v.build(copy.deepcopy(dense))
        runner = TorchRunner(model, v.backend, threads=args.threads, simulated=v.simulated)
        base, m, c = measure_pair(TorchRunner(dense, threads=args.threads), runner, splits.test,
                                  TASK, settings)  # fmt: skip
        rows.append(row(v.name, base, m, c))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"digits MLP 64-{'-'.join(map(str, args.hidden))}-10, trained {args.epochs} epochs | "
        f"batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}, "
        f"quantized engine {torch.backends.quantized.engine} | {timing(settings)} per variant, "
        f"each against the dense model | load {load}\n"
    )
    print_table(rows)
    print(
        "\nunstructured rows run dense kernels (zeros are still multiplied): ~1.0x is the honest"
        "\nresult. fake-quant rows are simulated: accuracy and packed size only, no speed."
    )


if __name__ == "__main__":
    main()
