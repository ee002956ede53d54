"""What Optuna and ASHA optimise is the validation metric (``search_quality``), never the
test split: in every result a trial reports, compressed, fine-tuning and final, and in the
searcher's and scheduler's own settings (built for real, no Ray cluster)."""

from __future__ import annotations

import pytest

from accelab.config.schema import SweepConfig
from accelab.sweep.space import OBJECTIVES, SEARCH_QUALITY, scheduler, search_alg
from accelab.sweep.trial import stage_result, tune_metrics
from accelab.variant.run import FINETUNE_PREFIX

# the test split says 0.99, validation 0.70: only validation may reach the search
METRICS = {"accuracy": 0.99, "val_accuracy": 0.70, "accuracy_drop": 0.0, "val_accuracy_drop": 0.2,
           "latency_p50_ms": 1.5, "baseline_latency_p50_ms": 3.0}  # fmt: skip


def test_a_trials_result_carries_the_validation_metric_as_search_quality():
    out = tune_metrics(METRICS, "accuracy", "torch-fp32", "ok", "final")
    assert out[SEARCH_QUALITY] == 0.70
    assert out["search_latency_ms"] == 1.5
    simulated = {k: v for k, v in METRICS.items() if k != "latency_p50_ms"}
    assert tune_metrics(simulated, "accuracy", "x", "ok", "final")["search_latency_ms"] == 3.0
    lm = {"perplexity": 3.0, "val_perplexity": 9.0}
    assert tune_metrics(lm, "perplexity", "x", "ok", "final")[SEARCH_QUALITY] == 9.0


def test_each_fine_tuning_epoch_reports_its_validation_metric():
    carry = tune_metrics(METRICS, "accuracy", "torch-fp32", "ok", "compressed")
    epoch = {f"{FINETUNE_PREFIX}val_accuracy": 0.81, f"{FINETUNE_PREFIX}test_accuracy": 0.97,
             f"{FINETUNE_PREFIX}train_loss": 0.3}  # fmt: skip
    out = stage_result(carry, epoch, "accuracy")
    assert out[SEARCH_QUALITY] == 0.81 and out["stage"] == "finetuning"
    assert out["latency_p50_ms"] == 1.5  # the measured latency rides along


@pytest.mark.parametrize(("higher", "mode"), [(True, "max"), (False, "min")])
def test_optuna_and_asha_optimise_search_quality_in_the_metrics_direction(higher, mode):
    sweep = SweepConfig.model_validate({"search": "optuna", "scheduler": "asha"})
    searcher = search_alg(sweep, seed=0, higher_is_better=higher).searcher
    assert list(searcher.metric) == list(OBJECTIVES) == [SEARCH_QUALITY, "search_latency_ms"]
    assert list(searcher.mode) == [mode, "min"]
    asha = scheduler(sweep, max_epochs=3, higher_is_better=higher)
    assert (asha._metric, asha._mode) == (SEARCH_QUALITY, mode)  # Ray keeps them private
    assert scheduler(SweepConfig(), 3) is None
