"""The head-pruning rules one by one, on tiny models: each head's score is exactly
``||O_h||_F * ||V_h||_F`` on every architecture (a head whose values are zero goes, not
only one whose output is), ``round(fraction * heads)`` heads go and a fraction removing
all or none is refused naming the layer, ties remove the lower index and the kept heads
keep their order, exclusions match a layer or projection name (not a prefix of one),
``resize_heads`` narrows to the first heads and refuses an unknown layer, the narrowed
projections keep the model's dtype and training mode, GPT-2 cross-attention and modules
that only look like attention are left alone, and two models side by side keep their own
configs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from accelab.compress.errors import CompressionError
from accelab.compress.heads import (
    apply_heads,
    attention_layers,
    count_errors,
    head_counts,
    head_scores,
    heads_removed,
    resize_heads,
)
from tests.unit.compress.test_heads import HF_MODELS, build
from tests.unit.compress.test_heads_bert import bert
from tests.unit.compress.test_heads_config import causal_lm

try:  # the architectures' code loads once per session, not in each test's first model
    from transformers.models.bert import modeling_bert  # noqa: F401
    from transformers.models.gpt2 import modeling_gpt2  # noqa: F401
    from transformers.models.llama import modeling_llama  # noqa: F401
except ImportError:
    pass

KINDS = ["pylm", "llama-gqa", "gpt2", "bert"]


def model_of(kind: str) -> nn.Module:
    return bert() if kind == "bert" else build(kind)


def slices(attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(output weight as (out, in), value weight as (out, in), head width, query heads per
    key/value head) of one attention layer, read off the architecture by hand."""
    if hasattr(attn, "c_attn"):  # GPT-2 Conv1D: weights are (in, out); v is the last third
        split = attn.split_size
        return attn.c_proj.weight.t(), attn.c_attn.weight[:, 2 * split :].t(), attn.head_dim, 1
    if hasattr(attn, "self"):  # BERT
        width = attn.self.attention_head_size
        return attn.output.dense.weight, attn.self.value.weight, width, 1
    o, v = (attn.o, attn.v) if hasattr(attn, "o") else (attn.o_proj, attn.v_proj)
    return o.weight, v.weight, attn.head_dim, getattr(attn, "num_key_value_groups", 1)


def expected_scores(attn: nn.Module) -> torch.Tensor:
    o, v, width, group = slices(attn)
    units = v.shape[0] // width
    out = []
    for h in range(units):
        v_norm = v[h * width : (h + 1) * width].norm()
        queries = range(h * group, (h + 1) * group)
        out.append(sum(o[:, q * width : (q + 1) * width].norm() * v_norm for q in queries))
    return torch.stack(out)


@pytest.mark.parametrize("kind", KINDS)
def test_each_heads_score_is_its_output_norm_times_its_value_norm(kind):
    model = model_of(kind)
    scores = head_scores(model)
    assert list(scores) == list(head_counts(model))
    for name, got in scores.items():
        expected = expected_scores(model.get_submodule(name))
        assert len(set(expected.tolist())) == len(expected)  # distinct: the check has teeth
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
    first, *rest = scores
    assert list(head_scores(model, exclude=[first])) == rest


@pytest.mark.parametrize("kind", KINDS)
def test_the_head_whose_values_are_zero_is_the_one_removed(kind):
    model = model_of(kind)
    names = list(head_counts(model))
    with torch.no_grad():
        for name in names:
            _, v, width, _ = slices(model.get_submodule(name))
            v[width : 2 * width] = 0  # head (key/value group) 1 passes nothing on
    fraction = 0.5 if kind == "llama-gqa" else 0.25  # one unit of 2, or of 4
    assert apply_heads(model, fraction) == {name: [1] for name in names}


def test_heads_removed_rounds_and_the_errors_name_the_layer():
    assert [heads_removed(4, f) for f in (0.1, 0.25, 0.5, 0.9)] == [0, 1, 2, 4]
    assert heads_removed(12, 0.3) == 4 and heads_removed(2, 0.25) == 0  # round(0.5) = 0
    assert count_errors({"a": 4, "b": 8}, 0.25) == []
    assert count_errors({"a": 4, "b": 2}, 0.2) == [
        "0.2 would remove no head of attention layer 'b' (2 heads)"]  # fmt: skip
    assert count_errors({"a": 2, "b": 4}, 0.75) == [  # round(1.5) = 2: all of a's heads
        "0.75 would remove every head of attention layer 'a' (2 heads)"]  # fmt: skip
    with pytest.raises(CompressionError, match=r"head pruning: 0.1 would remove no head of attention layer 'blocks.0.attn' \(4 heads\)"):  # fmt: skip
        apply_heads(build("pylm"), 0.1)


def test_ties_remove_the_lower_index_and_the_kept_heads_keep_their_order():
    model = build("pylm")
    attn = model.blocks[0].attn
    with torch.no_grad():  # every head of layer 0 scores the same
        attn.o.weight.fill_(0.1)
        attn.v.weight.fill_(0.2)
    q = attn.q.weight.detach().clone()
    assert apply_heads(model, 0.5)["blocks.0.attn"] == [0, 1]
    torch.testing.assert_close(model.blocks[0].attn.q.weight, q[16:], rtol=0, atol=0)
    # a layer whose scores are not sorted: the kept heads keep their original order
    model = build("pylm")
    attn = model.blocks[0].attn
    with torch.no_grad():
        for h, scale in enumerate([3.0, 0.1, 1.0, 0.2]):  # heads 1 and 3 go; 0, 2 stay
            attn.o.weight[:, h * 8 : (h + 1) * 8] *= scale
    q = attn.q.weight.detach().clone()
    assert apply_heads(model, 0.5)["blocks.0.attn"] == [1, 3]
    kept = model.blocks[0].attn.q.weight
    torch.testing.assert_close(kept, torch.cat([q[0:8], q[16:24]]), rtol=0, atol=0)


def test_exclude_matches_a_layer_or_its_projections_not_a_prefix_of_a_name():
    model = build("pylm")
    names = [n for n, _, _ in attention_layers(model)]
    assert names == ["blocks.0.attn", "blocks.1.attn"]
    for exclude in (["blocks.0.attn"], ["blocks.0.attn.v"], ["blocks.0.attn.o"], ["blocks.0"]):
        assert [n for n, _, _ in attention_layers(model, exclude)] == ["blocks.1.attn"]
    for exclude in (["blocks.0.at"], ["blocks.0.attn.q_proj"], ["blocks.1.attn.vv"]):
        assert [n for n, _, _ in attention_layers(model, exclude)] == names
    excluded = apply_heads(model, 0.5, exclude=["blocks.1"])
    assert list(excluded) == ["blocks.0.attn"]
    assert head_counts(model) == {"blocks.0.attn": 2, "blocks.1.attn": 4}
    bert_model = bert()
    first = next(iter(head_counts(bert_model)))
    for projection in ("self.key", "self.value", "output.dense"):
        kept = [n for n, _, _ in attention_layers(bert_model, [f"{first}.{projection}"])]
        assert first not in kept and len(kept) == 1


def test_a_module_without_an_integer_head_width_is_not_an_attention_layer():
    attn = build("pylm").blocks[0].attn
    assert [n for n, _, _ in attention_layers(attn)] == [""]
    attn.head_dim = 8.0
    assert attention_layers(attn) == []
    del attn.head_dim
    assert attention_layers(attn) == []


@pytest.mark.parametrize("kind", ["pylm", "gpt2", "bert"])
def test_resize_heads_keeps_the_first_heads_of_each_named_layer(kind):
    model = model_of(kind)
    original = copy.deepcopy(model)
    first, *rest = head_counts(model)
    assert resize_heads(model, {first: 3}) is model
    assert head_counts(model) == {first: 3, **{n: 4 for n in rest}}
    o, v, width, _ = slices(model.get_submodule(first))
    o0, v0, _, _ = slices(original.get_submodule(first))
    torch.testing.assert_close(v, v0[: 3 * width], rtol=0, atol=0)
    torch.testing.assert_close(o, o0[:, : 3 * width], rtol=0, atol=0)
    if kind == "gpt2":  # the fused layer's own bookkeeping follows
        attn = model.get_submodule(first)
        assert (attn.num_heads, attn.split_size, attn.c_attn.nf, attn.c_proj.nx) == (3, 24, 72, 24)
    if kind == "bert":
        inner = model.get_submodule(first).self
        assert (inner.num_attention_heads, inner.all_head_size) == (3, 24)
    with pytest.raises(
        CompressionError, match="head counts name 'nowhere', not an attention layer"
    ):
        resize_heads(model, {"nowhere": 2})


def test_resize_heads_makes_a_llama_config_say_the_new_counts():
    model = build("llama-gqa")  # 4 query heads, 2 key/value heads
    [name] = head_counts(model)
    resize_heads(model, {name: 1})
    config = model.model.config
    assert (config.num_key_value_heads, config.num_attention_heads, config.head_dim) == (1, 2, 8)
    attn = model.get_submodule(name)
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == (
        16, 8, 16)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_narrowed_projections_keep_dtype_biases_and_training_mode(dtype):
    model = build("pylm").to(dtype).train()
    bias = model.blocks[0].attn.o.bias.detach().clone()
    apply_heads(model, 0.5)
    attn = model.blocks[0].attn
    for layer in (attn.q, attn.k, attn.v, attn.o):
        assert layer.training and layer.weight.dtype == dtype and layer.bias.dtype == dtype
    torch.testing.assert_close(attn.o.bias, bias, rtol=0, atol=0)  # outputs untouched
    assert attn.q.bias.shape == (16,) and attn.o.bias.shape == (32,)
    model.eval()
    apply_heads(model, 0.5)
    assert not model.blocks[1].attn.q.training


def test_cross_attention_and_lookalike_modules_are_not_prunable_layers():
    gpt2 = build("gpt2")
    cross = causal_lm({**HF_MODELS["gpt2"], "add_cross_attention": True})
    assert list(head_counts(cross)) == list(head_counts(gpt2))  # not h.0.crossattention
    lookalike = nn.Module()  # GPT-2's attributes without its Conv1D projections
    lookalike.split_size, lookalike.head_dim, lookalike.c_attn = 32, 8, nn.Linear(32, 96)
    assert attention_layers(lookalike) == []
    model = bert()
    attn = model.get_submodule(next(iter(head_counts(model))))
    no_output = copy.deepcopy(attn)
    no_output.output = nn.Identity()  # the heads' module without the output projection
    assert attention_layers(no_output) == []
    attn.self.query = nn.Identity()  # head size and key/value, but no query projection
    assert attention_layers(attn) == []


def test_models_side_by_side_each_keep_their_own_config():
    pair = nn.ModuleDict({"a": build("llama"), "b": build("llama")})
    apply_heads(pair, 0.5, exclude=["b"])
    assert pair["a"].model.config.num_attention_heads == 2
    assert pair["b"].model.config.num_attention_heads == 4
    assert list(head_counts(pair).values()) == [2, 4]
