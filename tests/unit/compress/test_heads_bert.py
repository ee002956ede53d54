"""Head pruning on BERT-style attention (``self.query/key/value`` beside ``output.dense``,
a Hugging Face sequence classifier): the heads leave all four projections, removing a head
equals zeroing its contribution, the head with no output goes first, and the pruned
deployable reloads with its shapes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from accelab.compress.deploy import load_deployable, read_recipe, save_deployable
from accelab.compress.heads import apply_heads, head_counts
from accelab.compress.pipeline import Deployable
from accelab.config.schema import ExperimentConfig

BERT = {"model_type": "bert", "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4}  # fmt: skip
TRAINABLE = {"name": "hf_text_classifier", "model": "sequence_classifier",
             "model_args": {"config": BERT}}  # fmt: skip


def bert() -> nn.Module:
    pytest.importorskip("transformers")
    from trainables.hf.text import TEXT_CLASSIFIER

    torch.manual_seed(0)
    return TEXT_CLASSIFIER.build_model("sequence_classifier", config=BERT).eval()


def tokens(n: int = 2) -> torch.Tensor:
    return torch.randint(1, 256, (n, 128), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def silence(model: nn.Module, removed: dict[str, list[int]]) -> None:
    """Zero the output projection's input columns of ``removed`` heads."""
    for name, units in removed.items():
        attn = model.get_submodule(name)
        width = attn.self.attention_head_size
        for u in units:
            attn.output.dense.weight[:, u * width : (u + 1) * width] = 0


def test_bert_heads_leave_q_k_v_and_the_output_projection():
    model = bert()
    masked = copy.deepcopy(model)
    assert list(head_counts(model).values()) == [4, 4]
    removed = apply_heads(model, 0.5)
    assert [len(r) for r in removed.values()] == [2, 2]
    for name in removed:
        attn = model.get_submodule(name)
        assert attn.self.query.out_features == attn.self.value.out_features == 16
        assert attn.output.dense.in_features == 16 and attn.self.num_attention_heads == 2
    silence(masked, removed)
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked(x), rtol=1e-4, atol=1e-5)


def test_the_bert_head_with_no_output_is_the_one_removed():
    model = bert()
    planted = {name: [i + 1] for i, name in enumerate(head_counts(model))}
    silence(model, planted)
    assert apply_heads(model, 0.25) == planted


def test_a_head_pruned_bert_deployable_reloads(tmp_path):
    model = bert()
    apply_heads(model, 0.5)
    quant = ExperimentConfig().compression.quant.model_dump()
    save_deployable(Deployable(model, "torch-fp32", False, "fp32"), tmp_path, TRAINABLE, model,
                    quant)  # fmt: skip
    assert read_recipe(tmp_path)["heads"] == head_counts(model)
    loaded = load_deployable(tmp_path)
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
