"""The shipped sweeps search the peers' default flows too (issue #19: the recommendation is
never slower than a peer's default flow at the quality budget): ONNX Runtime's
``quantize_dynamic`` defaults (per-tensor weights) in both; in the LM sweep also its
``quantize_static`` defaults (measured and rejected by the constraint, not hidden), the
per-tensor recipe on the fine-tuned pruned weights, and NNCF int8 on an OpenVINO target."""

from __future__ import annotations

from accelab.config.loader import load_config
from tests.conftest import CONFIGS

ORT_DYNAMIC_DEFAULTS = {"compression.quant.per_channel": False}
ORT_STATIC_DEFAULTS = {
    "compression.quant.scheme": "static",
    "compression.quant.per_channel": False,
    "compression.quant.activation_type": "int8",
}


def has(variants: list[dict], recipe: dict, **where) -> bool:
    return any(all(v.get(k) == x for k, x in {**recipe, **where}.items()) for v in variants)


def test_the_digits_sweep_searches_ort_default_dynamic_and_static_recipes():
    cfg = load_config(CONFIGS / "digits_sweep.yaml")
    assert has(cfg.sweep.variants, ORT_DYNAMIC_DEFAULTS, **{"compression.quant.bits": 8})
    assert has(cfg.sweep.variants, ORT_STATIC_DEFAULTS, **{"compression.quant.bits": 8})


def test_the_lm_sweep_searches_every_peer_default_flow():
    cfg = load_config(CONFIGS / "pylm_sweep.yaml")
    variants = cfg.sweep.variants
    assert has(variants, ORT_DYNAMIC_DEFAULTS, **{"compression.quant.bits": 8})
    assert has(variants, ORT_STATIC_DEFAULTS, **{"compression.quant.bits": 8})
    pruned = {"compression.prune.method": "structured", "finetune.epochs": 1}
    assert has(variants, ORT_DYNAMIC_DEFAULTS, **pruned)  # where the recommendation lives
    assert "openvino" in [t.runtime for t in cfg.measure.targets]  # NNCF int8 at bits 8


def test_the_hf_sweep_searches_ort_default_dynamic_recipe():
    cfg = load_config(CONFIGS / "hf_causal_lm_sweep.yaml")
    assert has(cfg.sweep.variants, ORT_DYNAMIC_DEFAULTS, **{"compression.quant.bits": 8})
