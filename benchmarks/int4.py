"""Is 4-bit weight-only worth it on CPU? int4 on ONNX Runtime and on OpenVINO, each against
the dense model on the same runtime.

    python benchmarks/int4.py [--block-size 32] [--threads 1] [--batches 64 1]

The digits MLP 64-1024-1024-10 (8 epochs), built through the same
``accelab.variant.targets`` code a sweep trial uses: ``ort-int4-weight-only-b<N>``
(MatMulNBits), ``openvino-int4-weight-only-g<N>`` (NNCF int4 weight compression; its float
parts run at OpenVINO's default hint, so ``openvino-bf16`` is shown too), at each batch
size: accuracy, p50 latency, speedup and size (the serialized model) against the dense
model on the same runtime (ort-fp32, openvino-f32) and against dense torch fp32.
"""

from __future__ import annotations

import argparse
import os

import torch

from accelab.config.schema import ExperimentConfig
from accelab.measure import TorchRunner, per_example
from accelab.measure.latency import timing
from accelab.training.epoch import fit
from accelab.variant.targets import (
    DenseRunners,
    Exports,
    build_on,
    measure_target,
    strip_for_export,
    targets_of,
)
from trainables.digits import TASK

HIDDEN = [1024, 1024]
ROWS = [("onnxruntime", 4), ("openvino", 16), ("openvino", 4)]


def config(bits: int, batch: int, a) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": HIDDEN}},
        "compression": {"quant": {"bits": bits, "block_size": a.block_size}},
        "measure": {"threads": a.threads, "batch_size": batch,
                    "targets": [{"runtime": "onnxruntime"}, {"runtime": "openvino"}]},
    })  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 1])
    a = p.parse_args()
    torch.manual_seed(0)
    splits = TASK.load_splits(0)
    model = fit(TASK.build_model("mlp", hidden=HIDDEN), splits.train, 8, loss=TASK.loss,
                batch_size=32).eval()  # fmt: skip
    print(f"torch {torch.__version__}, {a.threads} thread(s), "
          f"{timing(config(32, 64, a).measure)}, "
          f"load {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")  # fmt: skip
    print(f"{'backend':<40}{'batch':>6}{'accuracy':>10}{'p50 ms':>9}{'vs same runtime':>24}"
          f"{'size':>10}{'size ratio':>12}{'vs torch fp32':>15}")  # fmt: skip
    exports = Exports(strip_for_export(model))
    test, val = splits.test, splits.val
    for batch in a.batches:
        runner = TorchRunner(model, threads=a.threads)
        dense = DenseRunners(runner, TASK, per_example(runner, test, TASK),
                             per_example(runner, val, TASK), exports=exports)  # fmt: skip
        for runtime, bits in ROWS:
            cfg = config(bits, batch, a)
            target = next(t for t in targets_of(cfg) if t.runtime == runtime)
            built = build_on(runtime, model, cfg, TASK, exports, test.tensors[0])
            r = measure_target(target, built, dense, test, val, cfg.measure, cfg)
            if r.error:
                print(f"{built.backend:<40}{batch:>6}  n/a: {r.error[:80]}")
                continue
            s, st, m = r.vs_family.speedup, r.vs_torch.speedup, r.measurement
            base = r.family_baseline
            print(f"{r.backend:<40}{batch:>6}{m.quality.value:>10.4f}{m.latency_p50_ms:>9.3f}"
                  f"{s.value:>8.2f}x ({s.lo:.2f}-{s.hi:.2f}) vs {base.backend:<13}"
                  f"{m.size_bytes / 1e6:>7.2f} MB{r.vs_family.size_ratio:>9.3f} of "
                  f"{base.size_bytes / 1e6:.2f} MB{st.value:>7.2f}x")  # fmt: skip
        print()


if __name__ == "__main__":
    main()
