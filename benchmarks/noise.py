"""How much does a model timed against itself (an A/A control) stray from 1.0x? The noise
floor of accelab's latency numbers, with the old and the new timing method, on a quiet
machine and beside CPU-bound background processes.

    python benchmarks/noise.py [--repeats 3] [--background 2] [--no-pylm] [--only ort]

Each cell: the A/A control of one target (the dense model against a copy of itself, the
same runners and ``accelab.measure.latency.time_runners`` a sweep trial uses: on ONNX
Runtime the dense torch model is timed alongside, as in a trial, and the floor is that of
the two sessions), repeated
``--repeats`` times; shown: the median and the worst noise floor (``accelab.stats.
noise_floor``) and the median seconds one control took. Methods: ``rounds`` (the oldest:
alternating rounds of repeats, min-max of round ratios); ``blocks, normal prio`` (short
interleaved blocks of 5 calls, order-statistic interval of the median ratio, sampled until
``measure.target_precision`` or ``measure.max_seconds``: the default before
``measure.realtime``, ``measure.block_ms`` and ``measure.primed``); ``blocks (default)``:
the same at real-time priority where the OS allows, fewer calls per block for slow models,
each timed call primed by an untimed one of the same model; that without priming; and
that pinned to one core (``measure.pin_cpu``).
"Loaded": ``--background`` busy-looping Python processes started here and killed at the
end (bounded by a deadline of their own too). Other work on the machine is not controlled:
the load average is printed.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time

import torch

from accelab.config.schema import MeasureConfig
from accelab.measure import TorchRunner, first_batch, speedup, time_runners
from accelab.stats import noise_floor

SPIN = "import time\nend = time.time() + {s}\nwhile time.time() < end:\n    pass\n"


def methods(old_rounds: int, old_repeats: int) -> dict[str, MeasureConfig]:
    return {
        "rounds (oldest)": MeasureConfig(method="rounds", rounds=old_rounds, repeats=old_repeats),
        "blocks, normal prio": MeasureConfig(realtime=False, block_ms=0, primed=False),
        "blocks (default)": MeasureConfig(),
        "default, unprimed": MeasureConfig(primed=False),
        "default, pinned": MeasureConfig(pin_cpu=True),
    }


def ort_trio(model: torch.nn.Module, example: torch.Tensor):
    """Dense torch, then two ONNX Runtime sessions of the same export: a trial's runners."""
    from accelab.backends import ORT_FP32
    from accelab.export.onnx import to_onnx
    from accelab.export.runner import OrtRunner

    onnx = to_onnx(model, example, "dynamo")
    return TorchRunner(model), OrtRunner(onnx, model, ORT_FP32), OrtRunner(onnx, model, ORT_FP32)


def cases(with_pylm: bool):
    """(label, runner pair, batch, old rounds, old repeats) per target: the shipped sweeps'."""
    from trainables import digits, pylm

    torch.manual_seed(0)
    mlp = digits.TASK.build_model("mlp", hidden=[1024, 1024]).eval()
    test = digits.TASK.load_splits(0).test
    out = [("digits MLP, torch b64", (TorchRunner(mlp), TorchRunner(copy.deepcopy(mlp))),
            first_batch(test, 64), 5, 50)]  # fmt: skip
    trio = ort_trio(mlp, digits.TASK.example_input(2))
    out += [("digits MLP, ort b64", trio, first_batch(test, 64), 5, 50),
            ("digits MLP, ort b1", trio, first_batch(test, 1), 5, 50)]  # fmt: skip
    if with_pylm:
        gpt = pylm.TASK.build_model("gpt", n_layer=2, n_head=4, d_model=128, mlp_ratio=4).eval()
        lm_test = pylm.TASK.load_splits(0).test
        out.append(("pylm GPT, torch b16", (TorchRunner(gpt), TorchRunner(copy.deepcopy(gpt))),
                    first_batch(lm_test, 16), 3, 20))  # fmt: skip
    return out


def floors(runners, batch, s: MeasureConfig, repeats: int) -> tuple[float, float, float, str]:
    """Median and worst floor of the last two runners, median seconds, and the applied
    method (of the last control)."""
    values, seconds = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        *_, base, same = time_runners(list(runners), batch, s)
        seconds.append(time.perf_counter() - start)
        values.append(noise_floor(speedup(base, same)))
    return statistics.median(values), max(values), statistics.median(seconds), base.method


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="A/A controls per cell")
    p.add_argument("--background", type=int, default=2, help="busy processes when loaded")
    p.add_argument("--no-pylm", action="store_true")
    p.add_argument("--only", default="", help="only targets whose label contains this")
    p.add_argument("--quiet-only", action="store_true", help="skip the loaded half")
    p.add_argument("--limit-s", type=float, default=1200, help="background processes' own deadline")
    a = p.parse_args()
    torch.set_num_threads(1)
    all_cases = [c for c in cases(not a.no_pylm) if a.only in c[0]]
    d = MeasureConfig()
    print(f"torch {torch.__version__}, 1 thread, {os.cpu_count()} CPUs; default method: blocks of "
          f"up to {d.block_calls} calls (block_ms {d.block_ms:g}), realtime={d.realtime}, target "
          f"+-{d.target_precision:.0%}, budget {d.max_seconds:g} s; {a.repeats} A/A controls per "
          f"cell: floor median / worst, seconds per control; load avg = 1-min load average "
          f"after the cell\n")  # fmt: skip
    print(
        f"{'target':<24}{'load':<20}{'method':<21}{'floor':>8}{'worst':>8}{'s':>7}  load avg  applied"
    )
    for loaded in (False,) if a.quiet_only else (False, True):
        procs = []
        if loaded:
            spin = SPIN.format(s=a.limit_s)
            procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(a.background)]
            time.sleep(1.0)
        try:
            for label, pair, batch, rounds, repeats in all_cases:
                for name, s in methods(rounds, repeats).items():
                    med, worst, secs, applied = floors(pair, batch, s, a.repeats)
                    load = f"+{a.background} busy procs" if loaded else "no extra load"
                    avg = f"{os.getloadavg()[0]:.1f}"
                    print(f"{label:<24}{load:<20}{name:<21}{med:>8.1%}{worst:>8.1%}{secs:>7.1f}  "
                          f"{avg:>8}  {applied}", flush=True)  # fmt: skip
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
