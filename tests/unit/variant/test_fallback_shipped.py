"""The float fallback's steps measure what ships: on an ONNX Runtime int4 target the
search's step 0 (nothing in float) is the int4 MatMulNBits model the judge then measures,
so its validation drop is the variant's own recorded one, and judging twice gives the
same number. (pylm had +0.74 % from torch's symmetric per-channel fake-quant in the
search and +0.01 % on ORT's asymmetric block-wise kernel in the report.)"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from accelab.compress.pipeline import compress_for_training
from accelab.config.schema import ExperimentConfig
from accelab.training.checkpoint import save_checkpoint
from accelab.variant.judge import judge, load_dense
from accelab.variant.sensitivity import describe_fallback, resolve_fallback
from accelab.variant.setup import Setup
from tests.helpers_torch import trained_mlp

HIDDEN = [64, 32]  # every Linear's input width divides the block size 32
TRAINABLE = {"name": "digits", "model": "mlp", "model_args": {"hidden": HIDDEN}}


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory) -> Path:
    model, _ = trained_mlp(tuple(HIDDEN), epochs=2)
    directory = tmp_path_factory.mktemp("dense")
    save_checkpoint(directory, model, {"loop": {}},
                    {"epoch": 1, "history": [], "trainable": TRAINABLE})  # fmt: skip
    return directory


def config() -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": TRAINABLE,
        "measure": {"targets": [{"runtime": "onnxruntime"}], "max_seconds": 0.2,
                    "onnx_exporter": "torchscript"},  # 0.1 s per export, not 3
        "compression": {"quant": {"bits": 4, "fallback": "auto", "fallback_budget": 0.5}},
    })  # fmt: skip


def test_fallback_step_zero_is_the_judged_validation_drop_on_ort_int4(dense_dir):
    setup = Setup.of(config())
    dense = load_dense(setup, dense_dir)
    new, found = resolve_fallback(setup, dense)
    assert found.result.float_layers == [] and [k for k, _ in found.result.steps] == [0]
    model = compress_for_training(copy.deepcopy(dense.model), new.cfg.compression, dense.task,
                                  dense.calibration)  # fmt: skip
    first, second = judge(dense, model, new.cfg), judge(dense, model, new.cfg)
    assert first.primary.backend == "ort-int4-weight-only-b32"
    assert first.val_drop == second.val_drop  # reproducible
    assert found.result.steps[0][1] == first.val_drop.value  # the step measured what ships
    assert found.measured_on == first.primary.backend
    assert "on ort-int4-weight-only-b32" in describe_fallback(found)
