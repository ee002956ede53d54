"""Splits that read examples lazily from files (``tests.streaming``) go everywhere a
``TensorDataset`` goes: the first examples come back as tensors without reading the rest,
and a trained model is judged on torch and ONNX Runtime with static int8 calibrated from
the training split."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from accelab.compress.pipeline import calibration_from
from accelab.config.schema import ExperimentConfig
from accelab.training.checkpoint import save_checkpoint
from accelab.training.epoch import fit
from accelab.variant.run import run_variant
from accelab.variant.setup import Setup
from tests import streaming
from trainables.base import examples_of


@pytest.fixture
def splits(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELAB_STREAM_DIR", str(tmp_path))
    streaming.write_splits(tmp_path, 12_000_000)
    return streaming.load_splits(0)


def test_the_first_examples_are_read_and_no_others(splits):
    x, y = examples_of(splits.train, 300, batch_size=128)
    assert x.shape == (300, *streaming.SHAPE) and y.shape == (300,)
    assert splits.train.rss.reads == 300  # only what was asked for
    whole = TensorDataset(*examples_of(splits.val))
    assert len(whole) == len(splits.val)
    for i in (0, len(whole) - 1):
        assert all(torch.equal(a, b) for a, b in zip(whole[i], splits.val[i], strict=True))
    assert torch.equal(examples_of(whole, 7)[0], whole.tensors[0][:7])  # in memory: a view
    assert [len(b) for b in calibration_from(streaming.TASK, 0, 64, 3)] == [64, 64, 64]


def test_a_model_on_streamed_splits_is_judged_on_torch_and_ort_int8_static(splits, tmp_path):
    cfg = ExperimentConfig.model_validate(
        {
            "trainable": {"name": "tests.streaming:TASK", "model": "pooled_mlp"},
            "compression": {"quant": {"bits": 8, "scheme": "static"}},
            "measure": {
                "rounds": 2,
                "warmup": 1,
                "repeats": 5,
                "targets": [{"runtime": "torch"}, {"runtime": "onnxruntime"}],
            },
        }  # fmt: skip
    )
    torch.manual_seed(0)
    model = fit(streaming.TASK.build_model("pooled_mlp"), splits.train, 3,
                loss=streaming.TASK.loss, lr=3e-3, batch_size=128)  # fmt: skip
    save_checkpoint(tmp_path / "dense", model, {"loop": {}},
                    {"epoch": 0, "history": [], "trainable": cfg.trainable.model_dump()})  # fmt: skip
    m = run_variant(
        Setup.of(cfg), tmp_path / "dense", tracking_uri="", run_id=None, ray_name="x"
    ).metrics
    assert m["baseline_accuracy"] > 0.6, m
    assert m["n_test"] == len(splits.test)
    for sfx in ("", ".ort_b64"):
        assert m[f"simulated{sfx}"] == 0.0 and m[f"accuracy{sfx}"] > 0.6, m
