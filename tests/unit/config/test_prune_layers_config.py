"""``compression.prune.layers`` is checked up front: a sparsity out of range or a key that
matches no layer the method prunes is one line naming the key (ConfigError: exit 2), a
sweep may search it as a whole mapping, and the variant's name says it is per layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelab.config.schema import ExperimentConfig
from accelab.errors import ConfigError
from accelab.preflight import load_config, model_errors, sweep_errors, training_errors
from accelab.sweep.trial import trial_config
from accelab.tracking.runs import variant_name

MLP = {"name": "digits", "model": "mlp", "model_args": {"hidden": [16, 16]}}  # layers 1, 3, 5
CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def cfg(**prune) -> ExperimentConfig:
    return ExperimentConfig(trainable=MLP, compression={"prune": {"sparsity": 0.5, **prune}})


@pytest.mark.parametrize("value", ["1.0", "-0.1", "lots"])
def test_sparsity_out_of_range_names_the_key(value):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "digits.yaml", [f"compression.prune.layers={{fc1: {value}}}"])
    assert "compression.prune.layers.fc1" in str(err.value)


def test_keys_must_match_a_layer_the_method_prunes():
    assert model_errors(cfg(method="unstructured", layers={"[13]": 0.9, "3": 0.2})) == []
    assert model_errors(cfg(method="unstructured", layers={"fc*": 0.9, "5": 0.5})) == [
        "compression.prune.layers: ['fc*', '5'] match no layer that unstructured pruning "
        "prunes (the output layer and prune.exclude stay dense) ['1', '3']"
    ]
    assert (
        model_errors(cfg(method="unstructured", layers={"5": 0.5}, prune_output_layer=True)) == []
    )
    assert model_errors(cfg(method="unstructured", layers={"1": 0.5}, exclude=["1"])) == [
        "compression.prune.layers: ['1'] match no layer that unstructured pruning prunes (the "
        "output layer and prune.exclude stay dense) ['3']"
    ]
    assert model_errors(cfg(method="structured", layers={"5": 0.5})) == [
        "compression.prune.layers: ['5'] match no layer that structured pruning removes output "
        "channels of ['1', '3']"
    ]
    assert model_errors(cfg(method="none", layers={"nope": 0.5})) == []  # nothing to do


def test_heads_and_a_layer_left_without_channels_are_refused():
    heads = ExperimentConfig(
        trainable={"name": "pylm", "model": "gpt",
                   "model_args": {"n_layer": 1, "n_head": 4, "d_model": 32}},
        compression={"prune": {"method": "heads", "sparsity": 0.5,
                               "layers": {"blocks.0.mlp.fc1": 0.5}}},
    )  # fmt: skip
    assert any(p.startswith("compression.prune.layers: per-layer sparsity applies to")
               for p in model_errors(heads))  # fmt: skip
    tiny = ExperimentConfig(trainable={**MLP, "model_args": {"hidden": [16, 1]}},
                            compression={"prune": {"method": "structured", "sparsity": 0.5,
                                                   "layers": {"3": 0.5, "1": 0.25}}})  # fmt: skip
    assert model_errors(tiny) == [
        "compression.prune.layers: 0.5 would remove every channel of layer '3' (1 channels)"
    ]


def test_global_sparsity_may_be_zero_when_a_layer_has_its_own():
    assert training_errors(cfg(method="unstructured", sparsity=0.0, layers={"1": 0.9})) == []
    assert training_errors(cfg(method="unstructured", sparsity=0.0, layers={"1": 0.0})) == [
        "compression.prune.sparsity: must be > 0 when prune.method is set (or give some layer a "
        "sparsity > 0 in compression.prune.layers)"
    ]


def test_a_sweep_searches_the_recipe_as_a_whole_and_checks_each_choice():
    choices = [{}, {"1": 0.9}, {"nope": 0.9}]
    base = cfg(method="unstructured").model_dump()
    base["sweep"] = {"space": {"compression.prune.layers": {"choice": choices}}}
    problems = sweep_errors(ExperimentConfig.model_validate(base))
    assert problems == [
        "sweep.space.compression.prune.layers: at compression.prune.layers={'nope': 0.9}: "
        "compression.prune.layers: ['nope'] match no layer that unstructured pruning prunes "
        "(the output layer and prune.exclude stay dense) ['1', '3']"
    ]
    trial = trial_config(base, {"compression.prune.layers": {"1": 0.9}})
    assert trial.compression.prune.layers == {"1": 0.9}
    assert variant_name(trial) == "unstructured-0.5-layers"
    base["sweep"] = {
        "search": "optuna",
        "space": {"compression.prune.layers": {"choice": choices[:2]}},
    }
    assert sweep_errors(ExperimentConfig.model_validate(base)) == [
        "sweep.space.compression.prune.layers.choice: search=optuna samples numbers, strings, "
        "booleans and null; a choice of mappings or lists (e.g. compression.prune.layers) needs "
        "search grid or random"
    ]


def test_per_layer_recipes_are_logged_as_one_param_each():
    """A pattern such as ``blocks.1.attn.*`` is no MLflow param name: the recipes are logged
    whole (their JSON), so that a run with one starts (create_run refused it before); every
    name passes MLflow's own check."""
    from mlflow.utils.validation import _validate_param_name

    from accelab.tracking.client import flatten

    data = cfg(method="unstructured", layers={"blocks.1.attn.*": 0.8, "[13]": 0.5})
    data.compression.quant.layers = {"fc*": None}
    params = flatten(data.model_dump())
    assert params["compression.prune.layers"] == '{"blocks.1.attn.*": 0.8, "[13]": 0.5}'
    assert params["compression.quant.layers"] == '{"fc*": null}'
    assert params["trainable.model_args.hidden"] == [16, 16]  # other sections still flat
    for name in params:
        _validate_param_name(name)
