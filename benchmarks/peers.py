"""Is accelab's pick at least as fast as a peer's default flow on the same weights?

    python benchmarks/peers.py [--model mlp|cnn] [--epochs 8] [--max-seconds 5]

Trains the digits model once, then measures every flow below on those weights, in one
process, with the same timing method (``measure.method: blocks``: interleaved blocks,
median of paired ratios with a 95% interval) through the same ``accelab.variant.targets``
code a sweep trial uses: the peers' default flows (ONNX Runtime ``quantize_dynamic`` /
``quantize_static`` with default arguments = per-tensor, NNCF + OpenVINO, torch int8) next
to accelab's own recipes. All of them are candidates of accelab's search now
(``compression.quant.*`` recipe knobs, ``runtime: openvino``), so a sweep whose space lists
them recommends the fastest that meets the quality budget. Speedups are against dense torch
fp32 (p50 ratio shown too: it must lie in or near the interval).
"""

from __future__ import annotations

import argparse
import os

import torch

from accelab.config.schema import ExperimentConfig
from accelab.export import openvino
from accelab.measure import TorchRunner, per_example
from accelab.training.epoch import fit
from accelab.variant.judge import Dense
from accelab.variant.targets import DenseRunners, Exports, build_on, measure_target, targets_of
from trainables.digits import TASK

ORT_DEFAULTS = {"per_channel": False, "activation_type": "int8"}
FLOWS = [  # (label, runtime, compression.quant)
    ("torch fp32 (dense)", "torch", {"bits": 32}),
    ("torch int8 dynamic (accelab)", "torch", {"bits": 8}),
    ("torch int8 static FX (accelab)", "torch", {"bits": 8, "scheme": "static"}),
    ("ORT fp32", "onnxruntime", {"bits": 32}),
    ("ORT dynamic, accelab recipe", "onnxruntime", {"bits": 8}),
    ("ORT quantize_dynamic defaults", "onnxruntime", {"bits": 8, "per_channel": False}),
    ("ORT static, accelab recipe", "onnxruntime", {"bits": 8, "scheme": "static"}),
    ("ORT quantize_static defaults", "onnxruntime", {"bits": 8, "scheme": "static", **ORT_DEFAULTS}),
    ("OpenVINO f32 hint", "openvino", {"bits": 32}),
    ("OpenVINO default hint", "openvino", {"bits": 16}),
    ("NNCF int8 + OpenVINO", "openvino", {"bits": 8}),
]  # fmt: skip


def config(model: str, args: dict, runtime: str, quant: dict, batch: int, a) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": model, "model_args": args},
        "compression": {"quant": quant},
        "measure": {"threads": 1, "batch_size": batch, "max_seconds": a.max_seconds,
                    "targets": [{"runtime": runtime}]},
    })  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=5.0)
    a = p.parse_args()
    torch.manual_seed(0)
    args = {"hidden": [1024, 1024]} if a.model == "mlp" else {}
    splits = TASK.load_splits(0)
    model = fit(TASK.build_model(a.model, **args), splits.train, a.epochs, loss=TASK.loss,
                batch_size=32)  # fmt: skip
    flows = [f for f in FLOWS if f[1] != "openvino" or openvino.available()]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"digits {a.model} {args}, torch {torch.__version__}, 1 thread, blocks method "
          f"(budget {a.max_seconds:g} s per flow), load {load}\n")  # fmt: skip
    print(f"{'flow':<32}{'backend':<36}{'batch':>6}{'accuracy':>10}{'p50 ms':>9}"
          f"{'torch p50':>10}{'vs torch fp32 [95%]':>26}{'p50 ratio':>10}")  # fmt: skip
    for batch in (64, 1):
        runner = TorchRunner(model)
        dense = Dense(model, TASK, splits, DenseRunners(
            runner, TASK, per_example(runner, splits.test, TASK), per_example(runner, splits.val, TASK),
        ))  # fmt: skip
        exports = Exports(model)
        for label, runtime, quant in flows:
            cfg = config(a.model, args, runtime, quant, batch, a)
            (target,) = targets_of(cfg)
            built = build_on(runtime, model, cfg, TASK, exports, splits.test.tensors[0])
            r = measure_target(
                target, built, dense.runners, splits.test, splits.val, cfg.measure, cfg
            )
            if r.error:
                print(f"{label:<32}{built.backend:<36}{batch:>6}  n/a: {r.error[:60]}")
                continue
            m, t, s = r.measurement, r.torch_baseline, r.vs_torch.speedup
            ratio = t.latency_p50_ms / m.latency_p50_ms
            print(f"{label:<32}{r.backend:<36}{batch:>6}{m.quality.value:>10.4f}"
                  f"{m.latency_p50_ms:>9.3f}{t.latency_p50_ms:>10.3f}"
                  f"{s.value:>10.2f}x [{s.lo:.2f}, {s.hi:.2f}]{ratio:>9.2f}x", flush=True)  # fmt: skip
        print()


if __name__ == "__main__":
    main()
