"""The shipped Hugging Face causal LM config through the real CLI, at tiny sizes: DDP
training on 2 Ray Train workers, then ``compress --from`` its MLflow run with structured
pruning of MLP units + int8 on torch and ONNX Runtime, and the logged deployable model
reproducing the reported perplexity."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytest.importorskip("transformers")

from accelab.compress.deploy import load_deployable  # noqa: E402
from accelab.measure import evaluate  # noqa: E402
from tests.conftest import CONFIGS, run_cli  # noqa: E402
from trainables.hf.text import CAUSAL_LM  # noqa: E402

HF = str(CONFIGS / "hf_causal_lm.yaml")
TINY = ["trainable.model_args.config={model_type: llama, hidden_size: 32, intermediate_size: 64, "
        "num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2}",
        "train.epochs=1", "train.batch_size=128", "scaling.num_workers=2"]  # fmt: skip


def run_id_of(stdout: str) -> str:
    return re.search(r"MLflow run ([0-9a-f]{32})", stdout).group(1)


def test_hf_causal_lm_trains_on_two_workers_then_compresses_from_its_run(store, tmp_path):
    proc = run_cli("train", HF, *store["overrides"], *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = MlflowClient(store["tracking_uri"])
    train = client.get_run(run_id_of(proc.stdout))
    assert train.info.status == "FINISHED" and train.data.tags["accelab.world_size"] == "2"
    assert train.data.metrics["ddp_param_max_abs_diff"] == 0.0
    dense_ppl = train.data.metrics["test_perplexity"]
    assert dense_ppl < 60  # learned something (a uniform guess over 256 bytes is 256)

    proc = run_cli(
        "compress", HF, "--from", f"runs:/{train.info.run_id}", *store["overrides"], *TINY,
        "compression.prune.method=structured", "compression.prune.sparsity=0.5",
        "compression.quant.bits=8", "finetune.epochs=0", "measure.batch_size=8",
        "measure.repeats=5", "measure.warmup=2",
        "measure.targets=[{runtime: torch}, {runtime: onnxruntime}]", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = client.get_run(run_id_of(proc.stdout.split("compressing", 1)[-1]))
    m = run.data.metrics
    assert run.data.tags["accelab.status"] == "ok", run.data.tags
    assert m["baseline_perplexity"] == pytest.approx(dense_ppl, rel=1e-4)
    assert m["simulated"] == 0.0 and m["simulated.ort_b8"] == 0.0  # real int8 kernels
    assert m["size_ratio.ort_b8"] < 0.8  # a tiny model: the fp32 embedding is a big part
    assert m["perplexity"] < 2 * dense_ppl and m["perplexity.ort_b8"] < 2 * dense_ppl

    # the MLflow-logged deployable rebuilds the pruned int8 model and reproduces its number
    local = client.download_artifacts(run.info.run_id, "deployable_model", str(tmp_path))
    model = load_deployable(Path(local))
    mlp = model.model.model.layers[0].mlp
    assert mlp.down_proj.in_features == 32  # half of the 64 MLP units
    test = CAUSAL_LM.load_splits(0).test
    assert evaluate(model, test, CAUSAL_LM) == pytest.approx(m["perplexity"], rel=1e-6)
