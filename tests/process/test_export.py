"""ONNX Runtime as a measured backend, and exports that run without accelab: each format
is loaded in a fresh interpreter where ``import accelab`` fails (ONNX Runtime alone; torch
alone for torch.export), runs the digits test split and reproduces the logged accuracy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from accelab.training.checkpoint import save_checkpoint
from tests.conftest import CONFIGS, run_cli
from tests.helpers_torch import train
from tests.services import without_accelab
from trainables.digits import TASK

CNN = {"name": "digits", "model": "cnn", "model_args": {}, "data_seed": 0}
TARGETS = "measure.targets=[{runtime: torch}, {runtime: onnxruntime}, {runtime: onnxruntime, batch_size: 1}]"
FAST = ["measure.rounds=2", "measure.repeats=10", "measure.warmup=2", "finetune.epochs=0"]
EVALUATE = """
import importlib.util, json, sys
import numpy as np
assert importlib.util.find_spec("accelab") is None, "accelab must not be importable here"
fmt, path, data = sys.argv[1:]
d = np.load(data)
if fmt == "torch-export":
    import torch
    program = torch.export.load(path)
    out = program.module()(torch.from_numpy(d["x"])).detach().numpy()
else:
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": d["x"]})[0]
print(json.dumps({"accuracy": float((out.argmax(1) == d["y"]).mean())}))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two compress runs of a trained CNN: dense fp32, and int8 static (QDQ on ONNX Runtime)."""
    root = tmp_path_factory.mktemp("export")
    model = train(TASK.build_model("cnn"), TASK.load_splits(0).train, 4)
    save_checkpoint(
        root / "cnn", model, {"loop": {}}, {"epoch": 3, "history": [], "trainable": CNN}
    )
    db = f"sqlite:///{root / 'mlflow.db'}"
    out = {}
    for name, quant in (
        ("fp32", []),
        ("int8", ["compression.quant.bits=8", "compression.quant.scheme=static"]),
    ):
        proc = run_cli("compress", str(CONFIGS / "digits.yaml"), "--from", str(root / "cnn"),
                       f"tracking.uri={db}", TARGETS, *FAST, *quant, cwd=root)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out[name] = re.search(r"-> MLflow run ([0-9a-f]{32})", proc.stdout).group(1)
        out[f"{name}_stdout"] = proc.stdout
    return root, db, out


def test_onnx_runtime_targets_are_measured_named_and_checked(runs):
    root, db, out = runs
    client = MlflowClient(db)
    m = client.get_run(out["int8"]).data.metrics
    tags = client.get_run(out["int8"]).data.tags
    assert tags["accelab.backend"] == "torch-int8-x86-static"  # the CNN's convs get int8 too
    assert tags["accelab.backend.ort_b64"] == tags["accelab.backend.ort_b1"] == "ort-int8-static"
    for key in ("ort_b64", "ort_b1"):
        # against dense ONNX Runtime fp32, and against dense torch fp32 at the same batch
        assert m[f"speedup.{key}"] > 0 and m[f"speedup_vs_torch.{key}"] > 0
        assert m[f"speedup_lo.{key}"] <= m[f"speedup.{key}"] <= m[f"speedup_hi.{key}"]
        assert m[f"batch_size.{key}"] == (1.0 if key == "ort_b1" else 64.0)
        assert abs(m[f"accuracy.{key}"] - m["baseline_accuracy"]) < 0.03  # measured, not assumed
        assert m[f"export_max_abs_diff.{key}"] < 1e-4  # the fp32 export matched torch
    artifacts = {a.path for a in client.list_artifacts(out["int8"], "onnx")}
    assert artifacts == {"onnx/ort-int8-static.onnx"}
    assert "onnxruntime, batch 1" in out["int8_stdout"] and "ort-int8-static" in out["int8_stdout"]


@pytest.mark.parametrize("fmt, run, key", [("onnx", "fp32", "accuracy.ort_b64"),
                                           ("onnx-int8", "int8", "accuracy.ort_b64"),
                                           ("torch-export", "fp32", "accuracy")])  # fmt: skip
def test_each_export_runs_without_accelab_and_reproduces_the_logged_accuracy(runs, fmt, run, key):
    root, db, out = runs
    folder = root / f"out-{fmt}"
    proc = run_cli("export", f"runs:/{out[run]}", "--format", fmt, "--out", str(folder),
                   "--tracking-uri", db, cwd=root)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = next(p for p in folder.iterdir() if p.suffix in (".onnx", ".pt2"))
    test = TASK.load_splits(0).test
    data = root / "test_split.npz"
    np.savez(data, x=test.tensors[0].numpy(), y=test.tensors[1].numpy())
    env = {"PATH": "/usr/bin:/bin", **without_accelab(root / f"hide-{fmt}")}
    fresh = subprocess.run([sys.executable, "-c", EVALUATE, fmt, str(path), str(data)], env=env,
                           capture_output=True, text=True, timeout=300, cwd="/")  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    logged = MlflowClient(db).get_run(out[run]).data.metrics[key]
    assert json.loads(fresh.stdout)["accuracy"] == pytest.approx(logged, abs=1e-9)
    exported = {a.path for a in MlflowClient(db).list_artifacts(out[run], "export")}
    assert f"export/{path.name}" in exported  # logged with the run


def test_export_of_an_unknown_run_is_a_clear_error(runs):
    root, db, _ = runs
    proc = run_cli(
        "export", "runs:/0123456789abcdef0123456789abcdef", "--tracking-uri", db, cwd=root
    )
    assert proc.returncode == 2 and "not found in MLflow" in proc.stderr
    assert Path(root).is_dir()
