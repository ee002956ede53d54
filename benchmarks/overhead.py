"""What accelab itself costs next to the compute it runs, measured side by side.

    python benchmarks/overhead.py [--rounds 2] [--epochs 8] [--skip-sweep] [--out overhead.json]

Training: plain torch DDP (``torch.multiprocessing.spawn``, gloo, 2 processes, the same
SimpleModel, split, batch, epochs and accelab's own ``train_one_epoch``), the same loop in
a minimal Ray Train script (``TorchTrainer``, Ray's defaults, nothing else: the floor of
any tool built on Ray Train), and ``accelab train configs/digits.yaml`` (Ray Train, MLflow, checkpoints every epoch), in
alternating rounds. Reports the in-loop ratio (time per epoch) and the wall ratio
(launch to exit), with accelab's wall split into before-fit, Ray Train start-up, the loop,
and teardown.

Sweep: ``accelab sweep configs/digits_sweep.yaml`` against its own compute: the
baseline's training loop plus every trial's compression, measurement and fine-tuning
(``compute_s`` in each trial's MLflow run). Writes ``overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "configs" / "digits.yaml"
SWEEP = REPO / "configs" / "digits_sweep.yaml"


def plain_worker(rank: int, world: int, port: int, epochs: int, batch: int, out: str) -> None:
    from accelab.training.epoch import EpochContext, build_optimizer, train_one_epoch
    from trainables.digits import TASK

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    splits = TASK.load_splits(0)
    model = torch.nn.parallel.DistributedDataParallel(TASK.build_model("cnn"))
    sampler = DistributedSampler(splits.train, world, rank, shuffle=True, seed=0)
    loader = DataLoader(splits.train, batch_size=batch, sampler=sampler)
    ctx = EpochContext(model, loader, build_optimizer("adam", model.parameters(), 2e-3), TASK.loss)
    times = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        train_one_epoch(ctx)
        times.append(time.perf_counter() - start)
        dist.barrier()
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def plain_ddp(epochs: int, batch: int = 32) -> dict:
    """Wall from launch (a fresh interpreter, as a user runs a script) to exit."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "times.json")
        paths = [str(REPO), str(REPO / "platform")]
        code = (
            f"import sys, torch.multiprocessing as mp; sys.path[:0] = {paths!r}; "
            "from benchmarks.overhead import plain_worker; "
            f"mp.spawn(plain_worker, args=(2, {free_port()}, {epochs}, {batch}, {str(out)!r}), nprocs=2)"
        )
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        wall = time.perf_counter() - start
        epoch_s = json.loads(out.read_text())
    return {"wall_s": wall, "epoch_s": statistics.median(epoch_s)}


def bare_loop(config: dict) -> None:
    """The same loop inside a TorchTrainer with nothing else: no MLflow, checkpoints or
    validation; Ray Train's defaults (what a hand-written Ray Train script pays)."""
    import ray.train
    import ray.train.torch

    from accelab.training.epoch import EpochContext, build_optimizer, train_one_epoch
    from trainables.digits import TASK

    torch.set_num_threads(1)
    torch.manual_seed(0)
    splits = TASK.load_splits(0)
    model = ray.train.torch.prepare_model(TASK.build_model("cnn"))
    loader = ray.train.torch.prepare_data_loader(
        DataLoader(splits.train, batch_size=config["batch"], shuffle=True)
    )
    ctx = EpochContext(model, loader, build_optimizer("adam", model.parameters(), 2e-3), TASK.loss)
    times = []
    for epoch in range(config["epochs"]):
        if ray.train.get_context().get_world_size() > 1:
            loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        train_one_epoch(ctx)
        times.append(time.perf_counter() - start)
        ray.train.report({"epoch_s": times[-1]})
    if ray.train.get_context().get_world_rank() == 0:  # same machine: a file is simplest
        Path(config["out"]).write_text(json.dumps(times))


def bare_ray_train_main(epochs: int, batch: int, out: str, storage: str) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(include_dashboard=False)
    trainer = TorchTrainer(
        bare_loop,
        train_loop_config={"epochs": epochs, "batch": batch, "out": out},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(storage_path=storage),
    )
    trainer.fit()
    ray.shutdown()


def bare_ray_train(epochs: int, batch: int = 32) -> dict:
    """Wall of the same job as a minimal Ray Train script, launch to exit."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "times.json")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "platform")])}
        code = (
            "from benchmarks.overhead import bare_ray_train_main; "
            f"bare_ray_train_main({epochs}, {batch}, {str(out)!r}, {tmp!r})"
        )
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)
        wall = time.perf_counter() - start
        epoch_s = json.loads(out.read_text())
    return {"wall_s": wall, "epoch_s": statistics.median(epoch_s)}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelab_train(epochs: int) -> dict:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/mlflow.db"
        cmd = ["accelab", "train", str(DIGITS), f"train.epochs={epochs}", "train.precision=fp32",
               f"tracking.uri={db}", f"run.storage_path={tmp}/results"]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        run_id = proc.stdout.split("MLflow run ")[-1].split(";")[0].strip()
        client = MlflowClient(db)
        m = client.get_run(run_id).data.metrics
        epochs_s = [x.value for x in client.get_metric_history(run_id, "epoch_s")]
    loop = sum(epochs_s)
    return {
        "wall_s": wall,
        "epoch_s": statistics.median(epochs_s),
        "breakdown_s": {
            "before_fit (imports, checks, ray.init, MLflow run)": m["overhead_before_fit_s"],
            "ray_train_fit_minus_loop (start-up, validation, checkpoints, teardown)": m["fit_s"] - loop,
            "training_loop (sum of epoch_s)": loop,
            "after_fit (final record, Ray shutdown, exit)": wall - m["overhead_before_fit_s"] - m["fit_s"],
        },
    }  # fmt: skip


def accelab_sweep() -> dict:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/mlflow.db"
        cmd = [
            "accelab",
            "sweep",
            str(SWEEP),
            f"tracking.uri={db}",
            f"run.storage_path={tmp}/results",
        ]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        client = MlflowClient(db)
        exp = client.get_experiment_by_name("digits-sweep")
        runs = client.search_runs([exp.experiment_id])
    by_kind = {
        k: [r for r in runs if r.data.tags.get("accelab.kind") == k]
        for k in ("sweep", "train", "trial")
    }
    baseline_loop = sum(
        x.value for x in client.get_metric_history(by_kind["train"][0].info.run_id, "epoch_s")
    ) if by_kind["train"] else 0.0  # fmt: skip
    parent = by_kind["sweep"][0].data.metrics
    trials = sum(r.data.metrics.get("compute_s", 0.0) for r in by_kind["trial"])
    compute = baseline_loop + trials + parent.get("aa_compute_s", 0.0)
    return {
        "wall_s": wall,
        "compute_s": compute,
        "overhead_ratio": wall / compute,
        "breakdown_s": {
            "baseline training loop": baseline_loop,
            "A/A control measurement": parent.get("aa_compute_s", 0.0),
            "trials' own compute (compress, measure, fine-tune loops)": trials,
            "everything else (start-ups, Tune, MLflow, Ray)": wall - compute,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--out", default="overhead.json")
    args = p.parse_args()
    plain, bare, ours = [], [], []
    for r in range(args.rounds):  # alternating: a busy neighbour slows all alike
        plain.append(plain_ddp(args.epochs))
        bare.append(bare_ray_train(args.epochs))
        ours.append(accelab_train(args.epochs))
        print(f"round {r + 1}: wall / epoch: plain DDP {plain[-1]['wall_s']:.1f} s / "
              f"{plain[-1]['epoch_s']:.3f} s | Ray Train alone {bare[-1]['wall_s']:.1f} s / "
              f"{bare[-1]['epoch_s']:.3f} s | accelab {ours[-1]['wall_s']:.1f} s / "
              f"{ours[-1]['epoch_s']:.3f} s", flush=True)  # fmt: skip
    med = lambda rows, k: statistics.median(x[k] for x in rows)  # noqa: E731
    in_loop = [o["epoch_s"] / p["epoch_s"] for o, p in zip(ours, plain, strict=True)]
    wall = [o["wall_s"] / p["wall_s"] for o, p in zip(ours, plain, strict=True)]
    vs_bare = [o["wall_s"] / b["wall_s"] for o, b in zip(ours, bare, strict=True)]
    report = {
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "load": os.getloadavg()},
        "train": {
            "plain_ddp": {"wall_s": med(plain, "wall_s"), "epoch_s": med(plain, "epoch_s")},
            "ray_train_alone": {"wall_s": med(bare, "wall_s"), "epoch_s": med(bare, "epoch_s")},
            "accelab": {
                "wall_s": med(ours, "wall_s"),
                "epoch_s": med(ours, "epoch_s"),
                "breakdown_s": {
                    k: statistics.median(o["breakdown_s"][k] for o in ours)
                    for k in ours[0]["breakdown_s"]
                },
            },  # fmt: skip
            "in_loop_ratio": statistics.median(in_loop),
            "in_loop_ratio_range": [min(in_loop), max(in_loop)],
            "wall_ratio": statistics.median(wall),
            "wall_ratio_range": [min(wall), max(wall)],
            "wall_ratio_vs_ray_train": statistics.median(vs_bare),
            "wall_ratio_vs_ray_train_range": [min(vs_bare), max(vs_bare)],
        },
    }
    t = report["train"]
    print(
        f"\ntraining, {args.epochs} epochs, 2 workers, medians of {args.rounds} alternating rounds"
    )
    b = t["ray_train_alone"]
    print(
        f"{'':<24}{'plain DDP':>12}{'Ray Train':>12}{'accelab':>12}{'vs plain':>10}{'vs Ray Train':>14}"
    )
    print(
        f"{'time per epoch (s)':<24}{t['plain_ddp']['epoch_s']:>12.3f}{b['epoch_s']:>12.3f}"
        f"{t['accelab']['epoch_s']:>12.3f}{t['in_loop_ratio']:>9.2f}x"
        f"{t['accelab']['epoch_s'] / b['epoch_s']:>13.2f}x"
    )
    print(
        f"{'wall (s)':<24}{t['plain_ddp']['wall_s']:>12.1f}{b['wall_s']:>12.1f}"
        f"{t['accelab']['wall_s']:>12.1f}{t['wall_ratio']:>9.2f}x{t['wall_ratio_vs_ray_train']:>13.2f}x"
    )
    print("  (Ray Train alone: the same loop in a minimal TorchTrainer script, Ray's defaults)")
    for k, v in t["accelab"]["breakdown_s"].items():
        print(f"  accelab {k}: {v:.1f} s")
    if not args.skip_sweep:
        s = report["sweep"] = accelab_sweep()
        print(f"\nshipped sweep: wall {s['wall_s']:.1f} s, own compute {s['compute_s']:.1f} s, "
              f"overhead ratio {s['overhead_ratio']:.2f}x")  # fmt: skip
        for k, v in s["breakdown_s"].items():
            print(f"  {k}: {v:.1f} s")
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
