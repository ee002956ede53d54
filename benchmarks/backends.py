"""Which runtime makes a compressed model fastest where it will run? Side by side.

    python benchmarks/backends.py [--method blocks|rounds] [--threads 1]

For the digits MLP 64-1024-1024-10 (dense, and 50% of channels pruned + 2 fine-tune
epochs) and the article's SimpleModel (CNN): every backend accelab measures on CPU (torch
fp32 / bf16 / int8 dynamic / int8 static, ONNX Runtime fp32 / int8 dynamic / int8 static QDQ),
at batch 64 and batch 1, through the same ``accelab.variant.targets`` code a sweep trial uses:
speedup against the dense model on the same runtime and against dense torch fp32, and
test accuracy measured on that backend.
"""

from __future__ import annotations

import argparse
import copy
import os

import torch

from accelab.config.schema import ExperimentConfig
from accelab.measure import TorchRunner, per_example
from accelab.measure.latency import timing
from accelab.training.epoch import fit
from accelab.variant.judge import Dense
from accelab.variant.targets import (
    DenseRunners,
    Exports,
    build_on,
    measure_target,
    strip_for_export,
    targets_of,
)
from trainables.digits import TASK

SETTINGS = [("fp32", 32, "dynamic"), ("bf16", 16, "dynamic"), ("int8 dynamic", 8, "dynamic"),
            ("int8 static", 8, "static")]  # fmt: skip


def config(model: str, args: dict, bits: int, scheme: str, batch: int, a) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": model, "model_args": args},
        "compression": {"quant": {"bits": bits, "scheme": scheme}},
        "measure": {"threads": a.threads, "rounds": a.rounds, "repeats": a.repeats, "batch_size": batch,
                    "method": a.method,
                    "targets": [{"runtime": "torch"}, {"runtime": "onnxruntime"}]},
    })  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--method", choices=["blocks", "rounds"], default="blocks")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.manual_seed(0)
    splits = TASK.load_splits(0)
    mlp = fit(
        TASK.build_model("mlp", hidden=[1024, 1024]), splits.train, 8, loss=TASK.loss, batch_size=32
    )
    from accelab.compress.prune import apply_structured

    pruned = apply_structured(copy.deepcopy(mlp), 0.5, TASK.example_input(1))
    fit(pruned, splits.train, 2, loss=TASK.loss, lr=2e-3, schedule="cosine")
    cnn = fit(TASK.build_model("cnn"), splits.train, 8, loss=TASK.loss, batch_size=32)
    models = [("MLP 64-1024-1024-10", "mlp", {"hidden": [1024, 1024]}, mlp, mlp),
              ("same, 50% channels pruned + 2-epoch fine-tune", "mlp", {"hidden": [1024, 1024]}, mlp, pruned),
              ("SimpleModel (CNN)", "cnn", {}, cnn, cnn)]  # fmt: skip
    timed = timing(config("mlp", {}, 32, "dynamic", 64, a).measure)
    print(f"torch {torch.__version__}, {a.threads} thread(s), {timed}, "
          f"load {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")  # fmt: skip
    print(f"{'model':<48}{'backend':<22}{'batch':>6}{'accuracy':>10}{'p50 ms':>9}"
          f"{'vs same runtime':>17}{'vs torch fp32':>15}")  # fmt: skip
    for label, name, args, dense_model, model in models:
        for batch in (64, 1):
            cfg0 = config(name, args, 32, "dynamic", batch, a)
            runner = TorchRunner(dense_model, threads=a.threads)
            dense = Dense(dense_model, TASK, splits, DenseRunners(
                runner, TASK, per_example(runner, splits.test, TASK), per_example(runner, splits.val, TASK),
            ))  # fmt: skip
            exports = Exports(strip_for_export(model))
            for _, bits, scheme in SETTINGS:
                cfg = config(name, args, bits, scheme, batch, a)
                for runtime in ("torch", "onnxruntime"):
                    target = next(t for t in targets_of(cfg) if t.runtime == runtime)
                    built = build_on(runtime, model, cfg, TASK, exports, splits.test.tensors[0])
                    r = measure_target(
                        target, built, dense.runners, splits.test, splits.val, cfg.measure, cfg0
                    )
                    if r.error:
                        print(f"{label:<48}{built.backend:<22}{batch:>6}  n/a: {r.error[:60]}")
                        continue
                    s, st = r.vs_family.speedup, r.vs_torch.speedup
                    print(f"{label:<48}{r.backend:<22}{batch:>6}{r.measurement.quality.value:>10.4f}"
                          f"{r.measurement.latency_p50_ms:>9.3f}{s.value:>10.2f}x ({s.lo:.2f}-{s.hi:.2f})"
                          f"{st.value:>9.2f}x")  # fmt: skip
        print()


if __name__ == "__main__":
    main()
