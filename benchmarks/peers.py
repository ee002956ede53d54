"""Is accelab's pick at least as fast as a peer's default flow on the same weights?

    python benchmarks/peers.py [--model mlp|cnn|pylm] [--quick] [--max-seconds 5]

Trains the model once (in this process), applies accelab's recommended compression for it
(what its shipped sweep recommends: the digits MLP dense, the CNN and pylm structured 50%
+ fine-tuning; ``--prune``/``--sparsity``/``--finetune-epochs`` change it), then measures
every flow below on those same weights, in one process, with the same timing method
(``measure.method: blocks``: interleaved blocks, median of paired ratios with a 95%
interval) through the same ``accelab.variant.targets`` code a sweep trial uses: the peers'
default flows (ONNX Runtime ``quantize_dynamic`` / ``quantize_static`` with default
arguments = per-tensor, NNCF int8 + OpenVINO with the transformer preset for pylm, torch
int8) next to accelab's own recipes. Speedups are against the dense (uncompressed) model
on torch fp32 (p50 ratio shown too: it must lie in or near the interval). Quality is on
the test split; the budget verdict uses the validation drop against the dense model, as
a sweep's constraint does, so a recipe that breaks quality (ORT static on the LM) is shown
and rejected, not hidden. All the flows are candidates of accelab's search
(``compression.quant.*`` recipe knobs, ``runtime: openvino``).
"""

from __future__ import annotations

import argparse
import copy
import os
from dataclasses import dataclass

import torch

from accelab.compress.pipeline import Calibration, compress_for_training
from accelab.config.schema import ExperimentConfig
from accelab.export import openvino
from accelab.measure import TorchRunner, per_example
from accelab.measure.quality import drop_unit, estimate
from accelab.tasks import resolve_task
from accelab.training.epoch import fit
from accelab.variant.targets import DenseRunners, Exports, build_on, measure_target, targets_of
from trainables.base import examples_of

ORT_DEFAULTS = {"per_channel": False, "activation_type": "int8"}
PEER = "peer default"
FLOWS = [  # (label, runtime, compression.quant, whose flow)
    ("torch fp32", "torch", {"bits": 32}, "accelab"),
    ("torch int8 dynamic", "torch", {"bits": 8}, "accelab, torch's default"),
    ("torch int8 static FX", "torch", {"bits": 8, "scheme": "static"}, "accelab"),
    ("ORT fp32", "onnxruntime", {"bits": 32}, "accelab"),
    ("ORT dynamic, per-channel", "onnxruntime", {"bits": 8}, "accelab"),
    ("ORT quantize_dynamic defaults", "onnxruntime", {"bits": 8, "per_channel": False}, PEER),
    ("ORT static, per-channel", "onnxruntime", {"bits": 8, "scheme": "static"}, "accelab"),
    ("ORT quantize_static defaults", "onnxruntime", {"bits": 8, "scheme": "static", **ORT_DEFAULTS}, PEER),
    ("OpenVINO f32 hint", "openvino", {"bits": 32}, "accelab"),
    ("OpenVINO default hint", "openvino", {"bits": 16}, "accelab"),
    ("NNCF int8 + OpenVINO", "openvino", {"bits": 8}, PEER),
]  # fmt: skip
PEER_FLOWS = {label for label, *_, whose in FLOWS if whose != "accelab"}


@dataclass(frozen=True)
class Model:
    """A shipped model, how it is trained, and the compression its sweep recommends."""

    task: str
    arch: str
    args: dict
    epochs: int
    batches: tuple[int, ...]  # measured batch sizes
    budget: float  # the shipped sweep's quality budget (validation drop)
    prune: str = "none"
    sparsity: float = 0.0
    finetune_epochs: int = 0
    lr: float = 1e-3
    finetune_lr: float = 5e-4
    optimizer: str = "adam"
    train_examples: int | None = None  # a prefix of the training split (pylm: keeps it short)


MODELS = {
    "mlp": Model("digits", "mlp", {"hidden": [1024, 1024]}, 8, (64, 1), 0.01),
    "cnn": Model("digits", "cnn", {}, 8, (64, 1), 0.01, "structured", 0.5, 2),
    "pylm": Model(
        "pylm", "gpt", {"n_layer": 2, "n_head": 4, "d_model": 128, "mlp_ratio": 4}, 1, (16,),
        0.02, "structured", 0.5, 1, 3e-3, 1e-3, "adamw", train_examples=8192,
    ),
}  # fmt: skip


def config(m: Model, runtime: str, quant: dict, batch: int, max_seconds: float) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": {"name": m.task, "model": m.arch, "model_args": m.args},
        "compression": {"quant": quant,
                        "prune": {"method": m.prune, "sparsity": m.sparsity or 0.5}},
        "measure": {"threads": 1, "batch_size": batch, "max_seconds": max_seconds,
                    "targets": [{"runtime": runtime}]},
    })  # fmt: skip


def train(m: Model, task, splits):
    """The dense model, and the recommended compression of it (pruned + fine-tuned)."""
    train_set = splits.train
    if m.train_examples is not None:
        n = min(m.train_examples, len(train_set))
        train_set = torch.utils.data.Subset(train_set, range(n))
    kw = {"loss": task.loss, "batch_size": 32, "optimizer": m.optimizer}
    dense = fit(task.build_model(m.arch, **m.args), train_set, m.epochs, lr=m.lr, **kw)
    if m.prune == "none":
        return dense, dense
    cfg = config(m, "torch", {"bits": 32}, 1, 1.0)
    calibration = Calibration.of(task, 0, 32)
    pruned = compress_for_training(copy.deepcopy(dense), cfg.compression, task, calibration)
    if m.finetune_epochs:
        pruned = fit(pruned, train_set, m.finetune_epochs, lr=m.finetune_lr, **kw)
    return dense, pruned.eval()


@dataclass
class Row:
    label: str
    speedup: float
    within_budget: bool


def best(rows: list[Row], peers: bool) -> Row | None:
    """The fastest flow within the quality budget, among the peers' flows or all of them."""
    ok = [r for r in rows if r.within_budget and (r.label in PEER_FLOWS or not peers)]
    return max(ok, key=lambda r: r.speedup, default=None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="mlp")
    p.add_argument("--epochs", type=int, help="dense training epochs (default: per model)")
    p.add_argument("--prune", choices=["none", "structured"], help="default: the recommendation")
    p.add_argument("--sparsity", type=float)
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--max-seconds", type=float, default=5.0, help="timing budget per flow")
    p.add_argument("--quick", action="store_true", help="fewer epochs, 2 s per flow, batch 1 only")
    a = p.parse_args()
    m = MODELS[a.model]
    given = {"epochs": a.epochs, "prune": a.prune, "sparsity": a.sparsity,
             "finetune_epochs": a.finetune_epochs}  # fmt: skip
    changes = {k: v for k, v in given.items() if v is not None}
    if a.quick:
        changes = {"epochs": max(1, m.epochs // 4), "batches": m.batches[-1:],
                   "train_examples": 2048 if m.task == "pylm" else None, **changes}  # fmt: skip
        a.max_seconds = min(a.max_seconds, 2.0)
    m = Model(**{**m.__dict__, **changes})
    task = resolve_task(m.task)
    torch.manual_seed(0)
    splits = task.load_splits(0)
    dense, model = train(m, task, splits)
    flows = [f for f in FLOWS if f[1] != "openvino" or openvino.available()]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    unit = drop_unit(task.metric.transform == "exp")
    recipe = "dense" if m.prune == "none" else (
        f"{m.prune} {m.sparsity:g} + {m.finetune_epochs} fine-tune epoch(s)")  # fmt: skip
    print(f"{m.task} {m.arch} {m.args}, {m.epochs} epoch(s), weights: {recipe}; torch "
          f"{torch.__version__}, 1 thread, blocks method ({a.max_seconds:g} s per flow), "
          f"load {load}; budget: validation drop <= {m.budget * 100:g} {unit}\n")  # fmt: skip
    metric = task.metric.name[:10]
    print(f"{'flow':<31}{'whose':<26}{'backend':<34}{'batch':>6}{metric:>11}{'val drop':>9}"
          f"{'p50 ms':>9}{'torch p50':>10}{'vs dense torch fp32 [95%]':>27}{'p50 ratio':>10}")  # fmt: skip
    check_inputs = examples_of(splits.test)[0]
    for batch in m.batches:
        runner = TorchRunner(dense)
        dense_runners = DenseRunners(
            runner, task, per_example(runner, splits.test, task), per_example(runner, splits.val, task),
        )  # fmt: skip
        test_q, val_q = (estimate(v, task.metric).value for v in
                         (dense_runners.test_values, dense_runners.val_values))  # fmt: skip
        print(f"dense model, torch fp32 (the reference): test {task.metric.name} {test_q:.4f}, "
              f"validation {val_q:.4f}")  # fmt: skip
        exports = Exports(model)
        rows: list[Row] = []
        for label, runtime, quant, whose in flows:
            cfg = config(m, runtime, quant, batch, a.max_seconds)
            (target,) = targets_of(cfg)
            try:
                built = build_on(runtime, model, cfg, task, exports, check_inputs)
                r = measure_target(
                    target, built, dense_runners, splits.test, splits.val, cfg.measure, cfg
                )
            except Exception as exc:  # a flow that fails here is shown, not hidden
                print(f"{label:<31}{whose:<26}{'':<34}{batch:>6}  n/a: {type(exc).__name__}: "
                      f"{str(exc)[:80]}", flush=True)  # fmt: skip
                continue
            if r.error:
                print(f"{label:<31}{whose:<26}{r.backend:<34}{batch:>6}  n/a: {r.error[:80]}")
                continue
            meas, t, s = r.measurement, r.torch_baseline, r.vs_torch.speedup
            ok = r.val_drop.value <= m.budget
            rows.append(Row(label, s.value, ok))
            ratio = t.latency_p50_ms / meas.latency_p50_ms
            verdict = "" if ok else "  over budget"
            print(f"{label:<31}{whose:<26}{r.backend:<34}{batch:>6}{meas.quality.value:>11.4f}"
                  f"{r.val_drop.value * 100:>+9.2f}{meas.latency_p50_ms:>9.3f}"
                  f"{t.latency_p50_ms:>10.3f}{s.value:>11.2f}x [{s.lo:.2f}, {s.hi:.2f}]"
                  f"{ratio:>9.2f}x{verdict}", flush=True)  # fmt: skip
        pick, peer = best(rows, peers=False), best(rows, peers=True)
        if pick is not None and peer is not None:
            print(f"batch {batch}: fastest within budget {pick.label} {pick.speedup:.2f}x; best "
                  f"peer default flow {peer.label} {peer.speedup:.2f}x\n")  # fmt: skip


if __name__ == "__main__":
    main()
