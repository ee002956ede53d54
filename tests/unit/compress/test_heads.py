"""Attention-head pruning: heads really leave q/k/v/o (fewer parameters, narrower layers,
fewer heads), removing a head equals zeroing its contribution, the least important head
is the one that goes, and the pruned model exports to ONNX, saves and reloads, and is
refused by preflight where a model has no attention layer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from accelab.compress.deploy import load_deployable, load_float, read_recipe, save_deployable
from accelab.compress.errors import CompressionError
from accelab.compress.heads import apply_heads, head_counts
from accelab.compress.pipeline import Deployable
from accelab.config.schema import ExperimentConfig
from accelab.export.onnx import max_abs_diff, to_onnx
from accelab.preflight import model_errors
from trainables.pylm import TASK as PYLM

TINY = {"n_layer": 2, "n_head": 4, "d_model": 32}  # head_dim 8
PYLM_TRAINABLE = {"name": "pylm", "model": "gpt", "model_args": TINY}
HF = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
HF_MODELS = {
    "llama": {"model_type": "llama", "num_key_value_heads": 4, **HF},
    "llama-gqa": {"model_type": "llama", "num_key_value_heads": 2, **HF},  # 2 heads per kv head
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 4, "n_positions": 128},
}


def tokens(n: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (n, 128), generator=torch.Generator().manual_seed(0))


def pylm() -> nn.Module:
    torch.manual_seed(0)
    return PYLM.build_model("gpt", **TINY).eval()


def hf(kind: str) -> nn.Module:
    pytest.importorskip("transformers")
    from trainables.hf.text import CAUSAL_LM

    torch.manual_seed(0)
    return CAUSAL_LM.build_model("causal_lm", config=HF_MODELS[kind]).eval()


def output_columns(attn: nn.Module) -> tuple[torch.Tensor, int]:
    """The output projection's weight as (out, in) and the input features per unit."""
    if hasattr(attn, "c_proj"):  # GPT-2 Conv1D: weight (in, out)
        return attn.c_proj.weight.t(), attn.head_dim
    o = attn.o if hasattr(attn, "o") else attn.o_proj
    return o.weight, attn.head_dim * getattr(attn, "num_key_value_groups", 1)


@torch.no_grad()
def silence(model: nn.Module, removed: dict[str, list[int]]) -> None:
    """Zero the output-projection slices of ``removed`` heads: their contribution."""
    for name, units in removed.items():
        weight, width = output_columns(model.get_submodule(name))
        for u in units:
            weight[:, u * width : (u + 1) * width] = 0


MODELS = ["pylm", *HF_MODELS]


def build(kind: str) -> nn.Module:
    return pylm() if kind == "pylm" else hf(kind)


@pytest.mark.parametrize("kind", MODELS)
def test_removing_heads_equals_zeroing_their_contribution_and_shrinks_the_layers(kind):
    model = build(kind)
    masked = copy.deepcopy(model)
    before = head_counts(model)
    params = sum(p.numel() for p in model.parameters())
    removed = apply_heads(model, 0.5)
    assert {n: len(r) for n, r in removed.items()} == {n: c // 2 for n, c in before.items()}
    assert head_counts(model) == {n: c - c // 2 for n, c in before.items()}
    hidden = 32
    for name, units in before.items():
        attn = model.get_submodule(name)
        weight, width = output_columns(attn)
        assert weight.shape == (hidden, (units - units // 2) * width)
        if kind == "pylm":
            assert attn.n_head == 2 and attn.q.out_features == attn.k.out_features == 16
    # q, k, v and o each lose hidden x (removed width) weights (+ q/k/v biases where present)
    assert sum(p.numel() for p in model.parameters()) < params
    silence(masked, removed)
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked(x), rtol=1e-4, atol=1e-5)


def test_pylm_parameter_count_drops_by_exactly_the_removed_rows_and_columns():
    model = pylm()
    params = sum(p.numel() for p in model.parameters())
    apply_heads(model, 0.25)  # 1 of 4 heads (8 features) in each of 2 layers
    # per layer: q/k/v lose 8 rows (32 weights + 1 bias each), o loses 8 columns of 32
    assert params - sum(p.numel() for p in model.parameters()) == 2 * (3 * 8 * 33 + 8 * 32)


@pytest.mark.parametrize("kind", ["pylm", "llama-gqa", "gpt2"])
def test_the_head_with_no_output_is_the_one_removed(kind):
    model = build(kind)
    names = list(head_counts(model))
    planted = {name: [i % head_counts(model)[name] + 1] for i, name in enumerate(names)}
    silence(model, planted)  # these heads add nothing to the residual stream
    with torch.no_grad():  # and the others are made small, but not as small as nothing
        for name in names:
            weight, _ = output_columns(model.get_submodule(name))
            weight.mul_(0.1)
    removed = apply_heads(model, 0.25 if kind != "llama-gqa" else 0.5)
    assert removed == planted


def test_pruned_pylm_exports_to_onnx_and_matches_torch():
    model = pylm()
    apply_heads(model, 0.5)
    assert max_abs_diff(model, to_onnx(model, tokens(1)), tokens(4)) < 1e-4


@pytest.mark.parametrize("kind", ["pylm", "gpt2"])
def test_a_pruned_deployable_reloads_with_its_new_shapes(kind, tmp_path):
    model = build(kind)
    apply_heads(model, 0.5)
    trainable = PYLM_TRAINABLE
    if kind != "pylm":
        trainable = {"name": "hf_causal_lm", "model": "causal_lm",
                     "model_args": {"config": HF_MODELS[kind]}}  # fmt: skip
    quant = ExperimentConfig().compression.quant.model_dump()
    save_deployable(
        Deployable(model, "torch-fp32", False, "fp32"), tmp_path, trainable, model, quant
    )
    assert read_recipe(tmp_path)["heads"] == head_counts(model)
    x = tokens()
    for loaded in (load_deployable(tmp_path), load_float(tmp_path)):
        assert head_counts(loaded) == head_counts(model)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x))


def test_impossible_fractions_and_models_without_attention_are_refused():
    with pytest.raises(CompressionError, match="every head"):
        apply_heads(pylm(), 0.9)
    with pytest.raises(CompressionError, match="no attention layers"):
        apply_heads(nn.Sequential(nn.Linear(4, 4)), 0.5)


def config(trainable: dict, sparsity: float) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {"trainable": trainable,
         "compression": {"prune": {"method": "heads", "sparsity": sparsity}}}
    )  # fmt: skip


def test_preflight_names_the_key_for_a_model_without_attention_and_a_bad_fraction():
    mlp = {"name": "digits", "model": "mlp", "model_args": {"hidden": [16]}}
    [error] = model_errors(config(mlp, 0.5))
    assert error.startswith("compression.prune.method: heads, but digits/mlp has no attention")
    errors = model_errors(config(PYLM_TRAINABLE, 0.1))  # round(0.4) = 0 heads of 4
    assert errors and all(e.startswith("compression.prune.sparsity: 0.1 would remove no head") for e in errors)  # fmt: skip
    assert model_errors(config(PYLM_TRAINABLE, 0.5)) == []


def test_pruned_pylm_runs_on_ort_int8_and_openvino():
    from accelab.export import openvino
    from accelab.export.onnx import INPUT, quantize, session

    model = pylm()
    apply_heads(model, 0.5)
    fp32, x = to_onnx(model, tokens(1)), tokens(4)
    with torch.no_grad():
        expected = model(x).numpy()
    int8 = session(quantize(fp32, "dynamic")).run(None, {INPUT: x.numpy()})[0]
    assert int8.shape == expected.shape and abs(int8 - expected).max() < 0.1
    if not openvino.available():
        pytest.skip("OpenVINO extra not installed")
    import openvino as ov

    compiled = ov.Core().compile_model(
        openvino.from_onnx(fp32), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    assert abs(compiled(x.numpy())[0] - expected).max() < 1e-3


def test_the_pipeline_prunes_heads_where_the_config_says_so():
    from accelab.compress.pipeline import Calibration, compress_for_training

    cfg = config(PYLM_TRAINABLE, 0.5).compression
    unused = Calibration(lambda: None, 1)  # no quantization: no calibration batches read
    model = compress_for_training(pylm(), cfg, PYLM, unused)
    assert head_counts(model) == {"blocks.0.attn": 2, "blocks.1.attn": 2}
