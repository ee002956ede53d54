"""``accelab compress`` end to end through the real CLI: bad input exits 2 before Ray,
post-training variants are measured and logged honestly (no Ray), and one QAT + pruning
run fine-tunes on two real DDP workers (distilling from the dense model).

The dense model is a digits MLP trained in plain torch (seconds) and saved as an accelab
checkpoint, so only the fine-tuning test pays for a Ray Train start.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from accelab.compress.deploy import RECIPE, load_deployable
from accelab.compress.pipeline import compress_for_training
from accelab.measure import count_macs
from accelab.preflight import load_config
from accelab.training.checkpoint import MODEL_FILE, load_model_state, save_checkpoint
from accelab.variant.setup import Setup
from tests.conftest import CONFIGS, run_cli
from tests.helpers_torch import accuracy as evaluate_accuracy
from tests.helpers_torch import trained_mlp
from trainables.digits import TASK

MLP = str(CONFIGS / "digits_mlp.yaml")  # structured 0.5, bits 32, finetune.epochs 2
HIDDEN = "trainable.model_args.hidden=[256,256]"
TRAINABLE = {"name": "digits", "model": "mlp", "model_args": {"hidden": [256, 256]}, "data_seed": 0}
# Post-training: no fine-tuning (so no Ray), a short latency measurement.
TORCH_ONLY = (
    "measure.targets=[{runtime: torch}]"  # ONNX Runtime targets: tests/process/test_export.py
)
POST = [HIDDEN, "finetune.epochs=0", "measure.repeats=10", "measure.warmup=3", TORCH_ONLY]
MISSING_RUN = "0123456789abcdef0123456789abcdef"


def run_without_ray(*args: str, cwd: Path):
    """Run the CLI and check that it started no Ray session.

    Ray's temp dir is pointed into ``cwd`` (RAY_TMPDIR): a session this command starts
    would create it. Unlike comparing /tmp/ray/session_latest, sessions of concurrent
    processes (another test run, a sweep) cannot make this check fail.
    """
    ray_tmp = cwd / "ray_tmp"
    proc = run_cli(*args, cwd=cwd, env={"RAY_TMPDIR": str(ray_tmp)})
    assert not ray_tmp.exists(), f"a Ray session was started:\n{proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A dense MLP checkpoint (3 epochs of plain torch) and a CNN one (another model)."""
    root = tmp_path_factory.mktemp("checkpoints")
    model, _ = trained_mlp((256, 256), epochs=3)
    save_checkpoint(
        root / "mlp", model, {"loop": {}}, {"epoch": 2, "history": [], "trainable": TRAINABLE}
    )
    cnn_meta = {
        "epoch": 0,
        "history": [],
        "trainable": {"name": "digits", "model": "cnn", "model_args": {}, "data_seed": 0},
    }
    save_checkpoint(root / "cnn", TASK.build_model("cnn"), {"loop": {}}, cnn_meta)
    liar = {"epoch": 0, "history": [], "trainable": TRAINABLE}  # but the weights are 64 wide
    save_checkpoint(root / "liar", TASK.build_model("mlp", hidden=[64, 64]), {"loop": {}}, liar)
    return {"mlp": root / "mlp", "cnn": root / "cnn", "liar": root / "liar"}


# name -> (--from, overrides, expected substrings of stderr). Sources "mlp"/"cnn" are the
# fixture's checkpoints, others literal; {tmp} is the test's tmp_path, {cnn} the CNN checkpoint.
BAD_INPUT = {
    "from_unknown_mlflow_run": (
        f"runs:/{MISSING_RUN}",
        [HIDDEN],
        [f"--from runs:/{MISSING_RUN}: no such MLflow run at sqlite:///"],  # the store exists
    ),
    "from_other_trainable": (
        "cnn",
        [HIDDEN],
        [
            "--from {cnn}: checkpoint is from trainable",
            "{{'name': 'digits', 'model': 'cnn', 'model_args': {{}}, 'data_seed': 0}}",
            "the config's trainable is {{'name': 'digits', 'model': 'mlp'",
            "(trainable.*)",
        ],
    ),
    # Weights of another width under a meta.json that claims this one: refused before any run.
    "weights_do_not_fit": (
        "liar",
        [HIDDEN],
        ["model.safetensors: does not fit the configured model", "size mismatch"],
    ),
    # Another split: the checkpoint's training samples would be in this config's test set.
    "from_other_data_seed": (
        "mlp",
        [HIDDEN, "trainable.data_seed=1"],
        ["'data_seed': 0}}, but the config's trainable is", "'data_seed': 1}} (trainable.*)"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_compress_input_exits_2_without_ray(case, checkpoints, store, tmp_path):
    source, overrides, expected = BAD_INPUT[case]
    MlflowClient(store["tracking_uri"]).search_experiments()  # the store exists (and is empty)
    source = str(checkpoints[source]) if source in checkpoints else source
    source = source.format(tmp=tmp_path)
    # digits_mlp.yaml fine-tunes for 2 epochs: a run that got past validation would start Ray.
    proc = run_without_ray(
        "compress", MLP, "--from", source, *store["overrides"], *overrides, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for text in expected:
        assert text.format(tmp=tmp_path, cnn=checkpoints["cnn"]) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "compressing" not in proc.stdout  # nothing started, no MLflow run announced
    assert not (tmp_path / "results").exists()


def compress(store, source: Path, *overrides: str, cwd: Path):
    """Run ``accelab compress`` post-training; returns (completed process, MLflow run)."""
    # finetune.epochs=0: compression, measurement and logging all happen without Ray.
    proc = run_without_ray(
        "compress", MLP, "--from", str(source), *store["overrides"], *POST, *overrides, cwd=cwd
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    match = re.search(r"-> MLflow run ([0-9a-f]{32})", proc.stdout)
    assert match, proc.stdout
    run = MlflowClient(store["tracking_uri"]).get_run(match.group(1))
    assert run.info.status == "FINISHED"
    assert run.data.tags["accelab.kind"] == "compress"
    assert run.data.tags["accelab.status"] == "ok"
    assert run.data.tags["accelab.dense_source"] == str(source)
    return proc, run


def speedup_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("speedup "))


def download_deployable(store, run, tmp_path: Path) -> Path:
    client = MlflowClient(store["tracking_uri"])
    return Path(client.download_artifacts(run.info.run_id, "deployable_model", str(tmp_path)))


def test_unstructured_90_percent_is_sparse_but_not_claimed_faster(checkpoints, store, tmp_path):
    # One thread and 50 repeats (a few ms here): p50 stays stable on a busy 2-core machine.
    proc, run = compress(
        store,
        checkpoints["mlp"],
        "compression.prune.method=unstructured",
        "compression.prune.sparsity=0.9",
        "compression.prune.scope=global",
        "measure.threads=1",
        "measure.repeats=50",
        cwd=tmp_path,
    )
    m = run.data.metrics
    assert m["sparsity"] == pytest.approx(0.9, abs=0.005)
    assert m["nonzero_params"] < 0.15 * m["params"]
    # Dense kernels multiply the zeros too: about as fast, and stored just as big.
    assert 0.6 <= m["speedup"] <= 1.6
    assert m["size_ratio"] == pytest.approx(1.0, abs=0.01)
    assert run.data.tags["accelab.backend"] == "torch-fp32"
    assert run.data.tags["accelab.simulated"] == "false"
    assert "dense kernels" in speedup_line(proc.stdout)


def test_int8_runs_on_real_kernel_and_deployable_reproduces_accuracy(checkpoints, store, tmp_path):
    proc, run = compress(
        store,
        checkpoints["mlp"],
        "compression.prune.method=none",
        "compression.quant.bits=8",
        cwd=tmp_path,
    )
    m, tags = run.data.metrics, run.data.tags
    assert tags["accelab.backend"] == "torch-int8-x86"
    assert tags["accelab.simulated"] == "false"
    assert m["simulated"] == 0.0 and m["bits"] == 8.0
    assert m["latency_p50_ms"] > 0 and m["speedup"] > 0  # real kernel: timed
    assert m["size_ratio"] < 0.5  # int8 weights: about a quarter of fp32
    assert abs(m["accuracy"] - m["baseline_accuracy"]) <= 0.02
    assert "torch-int8-x86" in proc.stdout

    directory = download_deployable(store, run, tmp_path)
    assert (directory / "model_int8.pt").is_file() and (directory / RECIPE).is_file()
    model = load_deployable(directory)
    assert evaluate_accuracy(model, TASK.load_splits(0).test) == m["accuracy"]


def test_4bit_is_simulated_with_no_speed_claimed(checkpoints, store, tmp_path):
    proc, run = compress(
        store,
        checkpoints["mlp"],
        "compression.prune.method=none",
        "compression.quant.bits=4",
        cwd=tmp_path,
    )
    m, tags = run.data.metrics, run.data.tags
    assert tags["accelab.simulated"] == "true"
    assert tags["accelab.backend"] == "fake-quant (simulated)"
    assert m["simulated"] == 1.0 and m["bits"] == 4.0
    for key in ("latency_p50_ms", "latency_p95_ms", "throughput_sps", "speedup"):
        assert key not in m, f"{key} logged for a simulated variant"
    assert "accuracy" in m and "size_ratio" in m
    assert speedup_line(proc.stdout).startswith("speedup n/a")
    latency_row = next(line for line in proc.stdout.splitlines() if line.startswith("latency p50"))
    assert latency_row.split()[-1] == "n/a"
    # The simulated model still ships (fake-quant weights) and reproduces its accuracy.
    model = load_deployable(download_deployable(store, run, tmp_path))
    assert evaluate_accuracy(model, TASK.load_splits(0).test) == m["accuracy"]


def test_structured_half_shrinks_layers_and_deployable_rebuilds_them(checkpoints, store, tmp_path):
    _, run = compress(store, checkpoints["mlp"], "compression.prune.sparsity=0.5", cwd=tmp_path)
    m = run.data.metrics
    dense = TASK.build_model("mlp", hidden=[256, 256])
    dense.load_state_dict(load_model_state(checkpoints["mlp"] / MODEL_FILE))
    dense_params = sum(p.numel() for p in dense.parameters())
    assert m["params"] < 0.5 * dense_params
    assert m["macs"] < 0.5 * count_macs(dense, TASK.example_input(1))
    assert run.data.tags["accelab.backend"] == "torch-fp32"

    model = load_deployable(download_deployable(store, run, tmp_path))
    assert [layer.out_features for layer in model if isinstance(layer, torch.nn.Linear)] == [
        128,
        128,
        10,
    ]
    assert sum(p.numel() for p in model.parameters()) == m["params"]
    # The same compression recomputed here from the dense weights gives identical outputs.
    cfg = load_config(MLP, [*POST, "compression.prune.sparsity=0.5"])
    calibration = Setup.of(cfg).calibration
    expected = compress_for_training(copy.deepcopy(dense), cfg.compression, TASK, calibration)
    expected = expected.eval()
    x = TASK.load_splits(0).test.tensors[0]
    with torch.inference_mode():
        assert torch.equal(model(x), expected(x))
    assert evaluate_accuracy(model, TASK.load_splits(0).test) == m["accuracy"]


@pytest.mark.ray
def test_qat_int8_with_pruning_and_distillation_on_two_ddp_workers(checkpoints, store, tmp_path):
    proc = run_cli(
        "compress", MLP, "--from", str(checkpoints["mlp"]), *store["overrides"], HIDDEN,
        "compression.prune.method=unstructured", "compression.prune.sparsity=0.5",
        "compression.prune.schedule=cubic", "compression.prune.ramp_fraction=1.0",
        "compression.quant.bits=8", "compression.quant.mode=qat", "finetune.distill.weight=0.5",
        "finetune.epochs=2", "scaling.num_workers=2", "measure.repeats=10", "measure.warmup=3", TORCH_ONLY,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "epoch 2/2" in proc.stdout, proc.stdout + proc.stderr
    run_id = re.search(r"-> MLflow run ([0-9a-f]{32})", proc.stdout).group(1)
    client = MlflowClient(store["tracking_uri"])
    run = client.get_run(run_id)
    m, tags = run.data.metrics, run.data.tags

    assert run.info.status == "FINISHED"
    assert tags["accelab.status"] == "ok"
    assert tags["accelab.world_size"] == "2"
    assert tags["accelab.backend"] == "torch-int8-x86" and tags["accelab.simulated"] == "false"
    assert m["finetune_ddp_param_max_abs_diff"] == 0.0  # ranks hold identical weights
    # the dense model taught on every rank (its weights are no DDP parameters), and said so
    assert run.data.params["finetune.distill.weight"] == "0.5"
    distill = client.get_metric_history(run_id, "finetune_distill_loss")
    assert sorted(v.step for v in distill) == [0, 1] and all(v.value > 0 for v in distill)
    ramp = sorted(client.get_metric_history(run_id, "finetune_sparsity"), key=lambda v: v.step)
    assert [v.step for v in ramp] == [0, 1]
    assert 0.0 < ramp[0].value < ramp[1].value  # Zhu & Gupta's cubic schedule ramps up
    assert m["finetune_sparsity"] >= 0.49  # reached the target; masks kept zeros while training
    assert m["sparsity"] >= 0.49
    assert abs(m["accuracy"] - m["baseline_accuracy"]) <= 0.02
