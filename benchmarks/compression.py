"""Side-by-side compression benchmark on a Linear-heavy digits MLP, in one process.

    python benchmarks/compression.py [--hidden 2048 2048] [--batch-size 64] [--threads 2]
                                     [--repeats 50] [--rounds 3] [--epochs 5]

Trains the MLP briefly in plain torch, then measures the dense fp32 baseline and every
compressed variant with ``accelab.measure.measure``. Timed variants are measured in
``--rounds`` interleaved rounds and the round with the median p50 is kept; speedups are
relative to the baseline of the same run. Fake-quant rows are simulated: real accuracy
and packed size, no speed.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from accelab.compress import (
    apply_structured,
    apply_unstructured,
    convert_int8_dynamic,
    prepare_fake_quant,
)
from accelab.compress.quant import SIMULATED_BACKEND
from accelab.measure import Measurement, compare, measure
from trainables.digits import TASK


@dataclass
class Variant:
    name: str
    backend: str
    build: Callable[[nn.Module], nn.Module]
    simulated: bool = False


def train(model: nn.Module, data: TensorDataset, epochs: int, lr: float, seed: int) -> nn.Module:
    """Adam, batch 64, cross-entropy."""
    generator = torch.Generator().manual_seed(seed)
    x, y = data.tensors
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for idx in order.split(64):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def variants(args: argparse.Namespace, train_set: TensorDataset) -> list[Variant]:
    example = TASK.example_input(1)

    def structured(ratio: float, finetune: int) -> Callable[[nn.Module], nn.Module]:
        def build(model: nn.Module) -> nn.Module:
            pruned = apply_structured(model, ratio, example)
            return train(pruned, train_set, finetune, 5e-4, args.seed) if finetune else pruned

        return build

    out = [Variant("dense fp32", "fp32-dense", lambda m: m)]
    for sparsity in (0.5, 0.9):
        build = lambda m, s=sparsity: apply_unstructured(m, s)  # noqa: E731
        out.append(Variant(f"unstructured {sparsity:.0%}", "fp32-dense", build))
    for ratio in (0.3, 0.5, 0.7):
        out.append(Variant(f"structured {ratio:.0%}", "fp32-dense", structured(ratio, 0)))
        if args.finetune_epochs:
            name = f"structured {ratio:.0%} +ft{args.finetune_epochs}"
            out.append(Variant(name, "fp32-dense", structured(ratio, args.finetune_epochs)))
    out.append(Variant("int8 dynamic", "int8-x86", convert_int8_dynamic))
    for bits in (4, 2):
        build = lambda m, b=bits: prepare_fake_quant(m, b)  # noqa: E731
        out.append(Variant(f"fake-quant {bits}-bit", SIMULATED_BACKEND, build, simulated=True))
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(results: list[tuple[str, Measurement]]) -> None:
    base = results[0][1]
    header = ("variant", "backend", "accuracy", "acc drop", "p50 ms", "p95 ms", "speedup",
              "params", "size KB", "size ratio", "simulated")  # fmt: skip
    rows = [header]
    for name, m in results:
        c = compare(base, m)
        rows.append((
            name, m.backend, f"{m.accuracy:.4f}", f"{c['accuracy_drop']:+.4f}",
            _fmt(m.latency_p50_ms, ".3f"), _fmt(m.latency_p95_ms, ".3f"),
            _fmt(c["speedup"], ".2f") + ("x" if c["speedup"] else ""), f"{m.params:,}",
            f"{m.size_bytes / 1024:,.1f}", f"{c['size_ratio']:.3f}", "yes" if m.simulated else "no",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(w) if j < 2 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
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
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved timing rounds (median kept)"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--finetune-epochs", type=int, default=1, help="0 skips the fine-tuned rows"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    splits = TASK.load_splits(args.seed)
    baseline = train(
        TASK.build_model("mlp", hidden=args.hidden), splits.train, args.epochs, 1e-3, args.seed
    )
    models = {v.name: (v, v.build(copy.deepcopy(baseline))) for v in variants(args, splits.train)}

    timing = dict(
        batch_size=args.batch_size, threads=args.threads, warmup=args.warmup, repeats=args.repeats
    )
    rounds: dict[str, list[Measurement]] = {name: [] for name in models}
    for _ in range(args.rounds if args.rounds > 0 else 1):
        for name, (v, model) in models.items():
            rounds[name].append(
                measure(model, splits.test, backend=v.backend, simulated=v.simulated, **timing)
            )
            if v.simulated:
                rounds[name] = rounds[name][:1]  # accuracy and size are deterministic

    def median_round(ms: list[Measurement]) -> Measurement:
        if ms[0].simulated:
            return ms[0]
        p50 = statistics.median_low(m.latency_p50_ms for m in ms)
        return next(m for m in ms if m.latency_p50_ms == p50)

    results = [(name, median_round(ms)) for name, ms in rounds.items()]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"digits MLP 64-{'-'.join(map(str, args.hidden))}-10, trained {args.epochs} epochs | "
        f"batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}, "
        f"quantized engine {torch.backends.quantized.engine} | {args.rounds} rounds x "
        f"{args.repeats} repeats, median round kept | load average {load}\n"
    )
    print_table(results)
    print(
        "\nunstructured rows run dense kernels (zeros are still multiplied): ~1.0x is the honest"
        "\nresult. fake-quant rows are simulated: accuracy and packed size only, no speed."
    )


if __name__ == "__main__":
    main()
