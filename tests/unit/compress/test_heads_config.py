"""After head pruning, a Hugging Face Llama-style config says the new head counts, so that
the config alone builds the pruned model (its weights load and give the same output);
GPT-2's config cannot say it and is left alone, and so is a config whose layers differ."""

from __future__ import annotations

import pytest
import torch

from accelab.compress.heads import apply_heads, head_counts

LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4}  # fmt: skip


def causal_lm(config: dict) -> torch.nn.Module:
    pytest.importorskip("transformers")
    from trainables.hf.text import CAUSAL_LM

    torch.manual_seed(0)
    return CAUSAL_LM.build_model("causal_lm", config=config).eval()


@pytest.mark.parametrize("kv_heads", [4, 2])  # 2: grouped-query attention, 2 heads per kv head
def test_a_pruned_llama_config_builds_the_pruned_model(kv_heads):
    model = causal_lm({**LLAMA, "num_key_value_heads": kv_heads})
    apply_heads(model, 0.5)
    config = model.model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (
        4 // 2, kv_heads // 2, 8)  # fmt: skip
    rebuilt = type(model.model)(config).eval()
    rebuilt.load_state_dict(model.model.state_dict())
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(input_ids=x).logits, model(x))


def test_gpt2_and_mixed_head_counts_leave_the_config_alone():
    gpt2 = causal_lm({"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 4})
    apply_heads(gpt2, 0.5)
    assert gpt2.model.config.n_head == 4 and list(head_counts(gpt2).values()) == [2]
    llama = causal_lm({**LLAMA, "num_key_value_heads": 4})
    apply_heads(llama, 0.5, exclude=["model.model.layers.1.self_attn"])
    assert sorted(head_counts(llama).values()) == [2, 4]
    assert llama.model.config.num_attention_heads == 4
