"""A variant with a per-layer pruning recipe logs each layer's sparsity
(``sparsity/<layer>``, against the dense model: removed channels count as gone)."""

from __future__ import annotations

import pytest

from accelab.config.schema import ExperimentConfig
from accelab.tracking import names
from accelab.training.checkpoint import save_checkpoint
from accelab.variant.run import run_variant
from accelab.variant.setup import Setup
from tests.helpers_torch import trained_mlp

FAST = {"rounds": 2, "warmup": 1, "repeats": 5, "targets": [{"runtime": "torch"}]}


@pytest.mark.parametrize("method", ["unstructured", "structured"])
def test_each_layer_sparsity_is_a_metric(tmp_path, method):
    cfg = ExperimentConfig.model_validate({
        "trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": [64, 32]}},
        "compression": {"prune": {"method": method, "sparsity": 0.25, "layers": {"1": 0.75}}},
        "measure": FAST,
    })  # fmt: skip
    model, _ = trained_mlp((64, 32), epochs=1)
    save_checkpoint(tmp_path, model, {"loop": {}},
                    {"epoch": 0, "history": [], "trainable": cfg.trainable.model_dump()})  # fmt: skip
    r = run_variant(Setup.of(cfg), tmp_path, tracking_uri="", run_id=None, ray_name="x")
    assert r.metrics[names.layer_sparsity("1")] == pytest.approx(0.75, abs=1e-3)
    expected = 0.25 if method == "unstructured" else 1 - 16 * 24 / (64 * 32)
    assert r.metrics[names.layer_sparsity("3")] == pytest.approx(expected, abs=1e-3)
    assert r.metrics[names.layer_sparsity("5")] == pytest.approx(
        0.0 if method == "unstructured" else 0.25
    )
