"""Each step of a compression variant on untrained tiny models, milliseconds each: the
calibration batches (the first training examples of the configured split seed, never
validation), what is excluded from pruning, each pruning method and the QAT wrappers,
the fine-tune hooks (the dense weights, the masks or the cubic schedule's step counts,
the teacher, the metrics), and what ``finalize`` ships for each bit-width and kernel
choice. The mutation group ``deploy`` runs them."""

from __future__ import annotations

import copy

# torch's FX tracer (static int8) imports torch._dynamo and networkx on its first trace:
# seconds per process. Imported with the module instead, so that the processes mutation
# testing forks after collecting the tests (one per mutant) start with them loaded.
import networkx  # noqa: F401
import pytest
import torch
import torch._dynamo  # noqa: F401
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from accelab.backends import SIMULATED, TORCH_BF16, TORCH_FP32, TORCH_INT8, TORCH_INT8_STATIC
from accelab.compress.deploy import layer_shapes
from accelab.compress.distill import Distiller
from accelab.compress.heads import head_counts
from accelab.compress.pipeline import (
    Calibration,
    CompressionHooks,
    add_fake_quant,
    calibration_from,
    compress_for_training,
    finalize,
    output_layer,
    prune_exclude,
    zero_masks,
)
from accelab.compress.quant import (
    ActivationFakeQuant,
    FakeQuant,
    convert_int8_static,
    has_fake_quant,
    int8_types,
)
from accelab.config.schema import (
    CompressionConfig,
    FinetuneConfig,
    PruneConfig,
    QuantConfig,
    TrainableConfig,
)
from accelab.tracking import names
from accelab.training.checkpoint import save_model
from trainables.base import Splits, Task
from trainables.digits import INPUT_SHAPE, NUM_CLASSES, build_mlp
from trainables.digits import TASK as DIGITS
from trainables.pylm import TASK as PYLM

TINY_GPT = {"n_layer": 2, "n_head": 4, "d_model": 32}


def numbered_splits(seed: int = 0) -> Splits:
    """Example i of the training split is all ``1000 * seed + i``; validation and test are
    negative, so a range observed on them, or on another seed, shows."""
    train = torch.arange(40.0) + 1000 * seed
    x = train[:, None, None, None].expand(-1, *INPUT_SHAPE).contiguous()
    other = TensorDataset(-x, torch.zeros(40, dtype=torch.long))
    return Splits(TensorDataset(x, torch.zeros(40, dtype=torch.long)), other, other)


NUMBERED = Task("numbered", NUM_CLASSES, INPUT_SHAPE, numbered_splits, {"mlp": build_mlp})


def mlp(*hidden: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_mlp(list(hidden or (16,)))


def never() -> Dataset:
    raise AssertionError("the training split was read although nothing needs calibrating")


def observed(model: nn.Module) -> list[tuple[float, float]]:
    return [(float(o.min_val), float(o.max_val)) for o in model.modules()
            if isinstance(o, ActivationFakeQuant)]  # fmt: skip


def compression(prune: dict | None = None, **quant) -> CompressionConfig:
    return CompressionConfig(prune=PruneConfig(**(prune or {})), quant=QuantConfig(**quant))


# calibration data


def test_calibration_reads_the_first_training_examples_of_the_split_seed():
    batches = Calibration.of(NUMBERED, 2, 16).batches(3)
    assert [len(b) for b in batches] == [16, 16, 8]  # 40 examples: the last batch is short
    assert [float(b[:, 0, 0, 0].min()) for b in batches] == [2000, 2016, 2032]
    assert torch.equal(torch.cat(batches), numbered_splits(2).train.tensors[0])
    assert [b[:, 0, 0, 0].tolist() for b in calibration_from(NUMBERED, 1, 3, 2)] == [
        [1000, 1001, 1002], [1003, 1004, 1005]
    ]  # fmt: skip


def test_digits_calibration_is_the_training_split():
    [batch] = calibration_from(DIGITS, 0, 5, 1)
    assert torch.equal(batch, DIGITS.load_splits(0).train.tensors[0][:5])


# what is pruned


def test_the_output_layer_is_the_last_linear_or_conv():
    assert output_layer(mlp(8, 8)) == "5"
    assert output_layer(DIGITS.build_model("cnn", channels=2, hidden=4)) == "fc2"


@pytest.mark.parametrize(
    "exclude, output, expected",
    [([], False, ["3"]), (["1"], False, ["1", "3"]), (["3", "1"], False, ["3", "1"]),
     (["1"], True, ["1"]), ([], True, [])],
)  # fmt: skip
def test_prune_exclude_adds_the_output_layer_once_unless_it_may_be_pruned(
    exclude, output, expected
):
    prune = PruneConfig(exclude=exclude, prune_output_layer=output)
    assert prune_exclude(mlp(), prune) == expected


def test_structured_pruning_keeps_exclusions_per_layer_ratios_and_the_output_width():
    model = mlp(16, 16, 16)
    prune = {"method": "structured", "sparsity": 0.5, "exclude": ["1"], "layers": {"5": 0.25}}
    compress_for_training(model, compression(prune), DIGITS, Calibration(never, 8))
    widths = {name: s["out"] for name, s in layer_shapes(model).items()}
    assert widths == {"1": 16, "3": 8, "5": 12, "7": 10}


def test_structured_pruning_of_a_transformer_narrows_only_its_mlp_units():
    torch.manual_seed(0)
    model = PYLM.build_model("gpt", **TINY_GPT)
    before = layer_shapes(model)
    compress_for_training(model, compression({"method": "structured", "sparsity": 0.5}), PYLM,
                          Calibration(never, 8))  # fmt: skip
    changed = {n for n, s in layer_shapes(model).items() if s != before[n]}
    assert changed == {f"blocks.{i}.mlp.{fc}" for i in (0, 1) for fc in ("fc1", "fc2")}
    assert layer_shapes(model)["blocks.0.mlp.fc1"]["out"] == before["blocks.0.mlp.fc1"]["out"] // 2


def test_head_pruning_removes_heads_outside_the_excluded_layers():
    torch.manual_seed(0)
    model = PYLM.build_model("gpt", **TINY_GPT)
    prune = {"method": "heads", "sparsity": 0.5, "exclude": ["blocks.1.attn"]}
    compress_for_training(model, compression(prune), PYLM, Calibration(never, 8))
    assert head_counts(model) == {"blocks.0.attn": 2, "blocks.1.attn": 4}


def zeros(model: nn.Module) -> dict[str, float]:
    return {n: float((m.weight == 0).float().mean()) for n, m in model.named_modules()
            if isinstance(m, nn.Linear)}  # fmt: skip


def test_oneshot_unstructured_pruning_per_layer_and_the_output_layer_kept():
    model = mlp(16, 16)
    prune = {"method": "unstructured", "sparsity": 0.5, "scope": "layer", "layers": {"3": 0.25}}
    compress_for_training(model, compression(prune), DIGITS, Calibration(never, 8))
    assert zeros(model) == {"1": 0.5, "3": 0.25, "5": 0.0}
    masks = zero_masks(model)
    assert list(masks) == ["1", "3", "5"]
    assert all(torch.equal(masks[n], model.get_submodule(n).weight != 0) for n in masks)
    model = mlp(16, 16)
    prune = {"method": "unstructured", "sparsity": 0.5, "prune_output_layer": True}
    compress_for_training(model, compression(prune), DIGITS, Calibration(never, 8))
    assert zeros(model)["5"] > 0  # 720 of the 1440 weights, the output layer's among them
    assert (
        sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, nn.Linear)) == 720
    )


@pytest.mark.parametrize(
    "prune, quant",
    [({"method": "none"}, {}), ({"method": "unstructured", "sparsity": 0.5, "schedule": "cubic"}, {}),
     ({}, {"bits": 4, "mode": "ptq"}), ({}, {"bits": 32, "mode": "qat"})],
)  # fmt: skip
def test_what_is_left_for_later_changes_nothing_now(prune, quant):
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    same = compress_for_training(model, compression(prune, **quant), DIGITS, Calibration(never, 8))
    assert same is model and not has_fake_quant(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_qat_wraps_the_recipes_layers_and_calibrates_on_the_first_training_batches():
    model = compress_for_training(
        mlp(), compression(bits=4, mode="qat", activations=True, calibration_batches=2,
                           layers={"3": None}),
        DIGITS, Calibration.of(NUMBERED, 1, 4),
    )  # fmt: skip
    assert isinstance(model.get_submodule("1"), FakeQuant) and model.get_submodule("1").bits == 4
    assert type(model.get_submodule("3")) is nn.Linear
    assert observed(model) == [(1000.0, 1007.0)]  # 2 batches of 4, seed 1


def test_fake_quant_without_activations_never_reads_training_data():
    model = add_fake_quant(mlp(), QuantConfig(bits=3), Calibration(never, 8))
    assert {m.bits for m in model.modules() if isinstance(m, FakeQuant)} == {3}
    assert observed(model) == []


# fine-tuning hooks


def hooks(tmp_path, prune: dict, epochs: int = 3, steps: int = 10, distill=None, **quant):
    torch.manual_seed(0)
    dense = mlp(16, 16, seed=7)
    save_model(dense, tmp_path / "dense.safetensors")
    finetune = FinetuneConfig(epochs=epochs, **({"distill": distill} if distill else {}))
    h = CompressionHooks(TrainableConfig(name="digits", model="mlp", model_args={"hidden": [16, 16]},
                                         data_seed=1),
                         compression(prune, **quant), finetune, 4, str(tmp_path / "dense.safetensors"),
                         steps_per_epoch=steps)  # fmt: skip
    return h, dense


class Wrapper(nn.Module):
    """What DDP looks like to the hooks: the model as ``.module``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = model


def test_transform_starts_from_the_dense_weights_and_keeps_the_oneshot_masks(tmp_path):
    h, dense = hooks(tmp_path, {"method": "unstructured", "sparsity": 0.5})
    model = h.transform(mlp(16, 16, seed=3), DIGITS)
    assert h.pruner is None and h.masks.keys() == {"1", "3", "5"}
    assert all(torch.equal(h.masks[n], model.get_submodule(n).weight != 0) for n in h.masks)
    pruned = zeros(model)  # global: 640 of the 1280 weights outside the output layer
    assert pruned["5"] == 0.0 and 1024 * pruned["1"] + 256 * pruned["3"] == 640
    kept = model.get_submodule("1").weight != 0
    assert torch.equal(model.get_submodule("1").weight[kept], dense.get_submodule("1").weight[kept])
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)  # a fine-tuning step moves every weight
    h.after_step(Wrapper(model), 1)
    assert zeros(model) == pruned
    assert h.extra_metrics(Wrapper(model), 0) == {names.M_SPARSITY: 0.5}


def test_transform_prunes_structured_with_the_tasks_example_input(tmp_path):
    h, _ = hooks(tmp_path, {"method": "structured", "sparsity": 0.5})
    model = h.transform(mlp(16, 16), DIGITS)
    assert {name: s["out"] for name, s in layer_shapes(model).items()} == {"1": 8, "3": 8, "5": 10}
    assert h.masks == {} and h.pruner is None


def test_transform_calibrates_qat_on_the_configured_split_and_batch_size(tmp_path):
    h, _ = hooks(tmp_path, {}, bits=4, mode="qat", activations=True, calibration_batches=3)
    model = h.transform(mlp(16, 16), NUMBERED)
    assert observed(model)[0] == (1000.0, 1011.0)  # seed 1, 3 batches of 4


@pytest.mark.parametrize(
    "epochs, steps, ramp, total, frequency", [(3, 10, 0.5, 15, 2), (1, 3, 0.5, 1, 1),
                                              (0, 10, 0.5, 1, 2), (2, 8, 1.0, 16, 2)],
)  # fmt: skip
def test_the_cubic_schedule_spans_the_ramp_fraction_of_the_fine_tune(
    tmp_path, epochs, steps, ramp, total, frequency
):
    prune = {"method": "unstructured", "sparsity": 0.5, "schedule": "cubic", "scope": "layer",
             "ramp_fraction": ramp, "exclude": ["1"], "layers": {"3": 0.25}}  # fmt: skip
    h, dense = hooks(tmp_path, prune, epochs=epochs, steps=steps)
    model = h.transform(mlp(16, 16), DIGITS)
    p = h.pruner
    assert (p.final_sparsity, p.total_steps, p.frequency) == (0.5, total, frequency)
    assert (p.scope, p.exclude, p.layers, h.masks) == ("layer", ("1", "5"), (("3", 0.25),), {})
    assert zeros(model) == {"1": 0.0, "3": 0.0, "5": 0.0}  # nothing pruned before step 0
    h.after_step(Wrapper(model), total)
    assert zeros(model) == {"1": 0.0, "3": 0.25, "5": 0.0}


def test_the_steps_of_an_empty_fine_tune_count_as_one(tmp_path):
    prune = {"method": "unstructured", "sparsity": 0.5, "schedule": "cubic", "ramp_fraction": 1.0}
    h, _ = hooks(tmp_path, prune, epochs=0, steps=0)
    h.transform(mlp(16, 16), DIGITS)
    assert (h.pruner.total_steps, h.pruner.frequency) == (1, 1)


def test_without_distillation_the_task_loss_is_used(tmp_path):
    h, _ = hooks(tmp_path, {})
    assert h.batch_loss(DIGITS, torch.device("cpu")) is None and h.distiller is None
    model = h.transform(mlp(16, 16), DIGITS)
    assert h.extra_metrics(model, 0) == {names.M_SPARSITY: 0.0}


def test_distillation_uses_the_frozen_dense_model_with_the_configured_knobs(tmp_path):
    h, dense = hooks(tmp_path, {}, distill={"weight": 0.3, "temperature": 3.0})
    loss = h.batch_loss(DIGITS, torch.device("cpu"))
    assert isinstance(loss, Distiller) and loss is h.distiller
    assert (loss.weight, loss.temperature, loss.task_loss) == (0.3, 3.0, DIGITS.loss)
    assert not loss.teacher.training
    assert not any(p.requires_grad for p in loss.teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(loss.teacher.state_dict().values(),
                                                 dense.state_dict().values(), strict=True))  # fmt: skip
    loss.total, loss.batches = 3.0, 2
    assert h.extra_metrics(mlp(16, 16), 0) == {names.M_SPARSITY: 0.0, "distill_loss": 1.5}


# what ships


def finalized(quant: dict, model: nn.Module | None = None, calibration=None):
    model = model if model is not None else mlp()
    return finalize(Wrapper(model), QuantConfig(**quant), calibration or Calibration(never, 8))


def test_fp32_and_bf16_ship_real_kernels_on_a_copy():
    model = mlp().train()
    for quant, backend, kind, dtype in [
        ({}, TORCH_FP32, "fp32", torch.float32),
        ({"bits": 16}, TORCH_BF16, "bf16", torch.bfloat16),
        ({"bits": 16, "real_kernel": False}, TORCH_BF16, "bf16", torch.bfloat16),
    ]:
        d = finalized(quant, model)
        assert (d.backend, d.simulated, d.kind) == (backend, False, kind)
        assert d.model is not model and not d.model.training
        assert {p.dtype for p in d.model.parameters()} == {dtype}
    assert model.training and {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize(
    "bits, dtype", [(32, torch.float32), (16, torch.bfloat16), (4, torch.float32)]
)
def test_the_shipped_model_is_on_the_device_asked_for(bits, dtype):
    d = finalize(mlp(), QuantConfig(bits=bits), Calibration(never, 8), "meta")
    assert {(p.device.type, p.dtype) for p in d.model.parameters()} == {("meta", dtype)}


def test_int8_dynamic_quantizes_the_recipes_linear_layers():
    d = finalized({"bits": 8, "layers": {"3": None}})
    assert (d.backend, d.simulated, d.kind) == (TORCH_INT8, False, "int8")
    assert isinstance(d.model.get_submodule("1"), int8_types())
    assert type(d.model.get_submodule("3")) is nn.Linear


@pytest.mark.parametrize("quant", [{"bits": 4}, {"bits": 8, "real_kernel": False}])
def test_without_a_real_kernel_ptq_ships_calibrated_fake_quant(quant):
    model = mlp()
    d = finalized({**quant, "activations": True, "calibration_batches": 1},
                  model, Calibration.of(NUMBERED, 1, 4))  # fmt: skip
    assert (d.backend, d.simulated, d.kind) == (SIMULATED, True, "fake-quant")
    assert {m.bits for m in d.model.modules() if isinstance(m, FakeQuant)} == {quant["bits"]}
    assert observed(d.model) == [(1000.0, 1003.0), *observed(d.model)[1:]]
    assert not d.model.training and not has_fake_quant(model)


def test_a_qat_model_ships_its_own_fake_quant_or_stripped_to_int8():
    qat = compress_for_training(
        mlp(), compression(bits=4, mode="qat"), DIGITS, Calibration(never, 4)
    )
    qat.get_submodule("1").layer.weight.data.mul_(2)  # what fine-tuning learned
    d = finalized({"bits": 4, "mode": "qat"}, qat)
    assert d.kind == "fake-quant" and torch.equal(
        d.model.get_submodule("1").layer.weight, qat.get_submodule("1").layer.weight
    )
    d = finalized({"bits": 8, "mode": "qat"}, qat)
    assert d.kind == "int8" and not has_fake_quant(d.model) and has_fake_quant(qat)


def test_int8_static_calibrates_on_the_configured_training_batches():
    loads = []

    def load():
        loads.append(1)
        return numbered_splits(0).train

    d = finalized({"bits": 8, "scheme": "static", "calibration_batches": 2, "layers": {"3": None}},
                  calibration=Calibration(load, 4))  # fmt: skip
    assert (d.backend, d.simulated, d.kind) == (TORCH_INT8_STATIC, False, "int8-static")
    assert loads == [1] and type(d.model.get_submodule("3")) is nn.Linear
    expected = convert_int8_static(mlp(), Calibration.of(NUMBERED, 0, 4).batches(2), {"3": None})
    x = torch.rand(3, *INPUT_SHAPE) * 10
    assert torch.equal(d.model(x), expected(x))  # the same 2 batches of 4: the same scales
