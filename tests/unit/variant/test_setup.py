"""A command's ``Setup`` loads the trainable's splits once: a whole variant (judged on
torch and ONNX Runtime, both int8 static, so calibrated on training data three times)
reads them one time, and a copy of the setup for another section shares them."""

from __future__ import annotations

from accelab.config.schema import ExperimentConfig
from accelab.training.checkpoint import save_checkpoint
from accelab.variant.run import run_variant
from accelab.variant.setup import Setup
from tests.helpers_torch import trained_mlp
from trainables.base import Splits, Task
from trainables.digits import INPUT_SHAPE, NUM_CLASSES, build_mlp, load_splits

LOADS: list[int] = []


def counted_splits(seed: int = 0) -> Splits:
    LOADS.append(seed)
    return load_splits(seed)


COUNTED = Task("counted", NUM_CLASSES, INPUT_SHAPE, counted_splits, {"mlp": build_mlp})
TARGETS = [{"runtime": "torch"}, {"runtime": "onnxruntime", "batch_size": 16}]


def config() -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "trainable": {"name": "counted", "model": "mlp", "model_args": {"hidden": [32]}},
        "compression": {"quant": {"bits": 8, "scheme": "static"}},
        "measure": {"rounds": 2, "warmup": 1, "repeats": 3, "method": "rounds",
                    "targets": TARGETS},
    })  # fmt: skip


def test_a_variant_loads_the_splits_once(tmp_path):
    cfg = config()
    model, _ = trained_mlp((32,), epochs=1)
    save_checkpoint(tmp_path, model, {"loop": {}},
                    {"epoch": 0, "history": [], "trainable": cfg.trainable.model_dump()})  # fmt: skip
    LOADS.clear()
    r = run_variant(Setup(cfg, COUNTED), tmp_path, tracking_uri="", run_id=None, ray_name="x")
    assert [t.backend for t in r.targets.values()] == ["torch-int8-x86-static", "ort-int8-static"]
    assert LOADS == [0]  # the test, validation and calibration batches all came from one load


def test_a_setup_for_another_section_shares_the_splits():
    setup = Setup(config(), COUNTED)
    LOADS.clear()
    splits = setup.splits
    plain = setup.with_config(
        setup.cfg.model_copy(update={"compression": type(setup.cfg.compression)()})
    )
    assert plain.splits is splits and plain.task is COUNTED and LOADS == [0]
