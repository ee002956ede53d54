"""The YAML ``sweep`` section -> Tune param space, search algorithm and scheduler."""

from __future__ import annotations

from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from accelab.config.schema import Distribution, SweepConfig
from accelab.tracking import names

# Objectives for multi-objective search: validation quality (the test split is not for
# search) and measured latency of the compressed model.
SEARCH_QUALITY = "search_quality"
OBJECTIVES = (SEARCH_QUALITY, names.M_SEARCH_LATENCY_MS)
VARIANT_KEY = "variant"


def quality_mode(higher_is_better: bool) -> str:
    return "max" if higher_is_better else "min"


def tune_domain(dist: Distribution) -> Any:
    kind = dist.kind
    value = getattr(dist, kind)
    if kind == "grid":
        return tune.grid_search(list(value))
    if kind == "choice":
        return tune.choice(list(value))
    if kind == "randint":
        return tune.randint(*value)
    return getattr(tune, kind)(*value)


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """Flat ``{"compression.prune.sparsity": domain, ...}``; trials get dotted keys back.
    ``sweep.variants`` become one more grid dimension under the key ``variant``."""
    space = {key: tune_domain(dist) for key, dist in sweep.space.items()}
    if sweep.variants:
        space[VARIANT_KEY] = tune.grid_search([dict(v) for v in sweep.variants])
    return space


def assignments(values: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled values as dotted-key assignments (variants expanded)."""
    out = {k: v for k, v in values.items() if k != VARIANT_KEY}
    out.update(values.get(VARIANT_KEY) or {})
    return out


def search_alg(sweep: SweepConfig, seed: int, higher_is_better: bool = True):
    """Tune's variant generator (grid, or seeded random sampling) or Optuna's
    multi-objective search (NSGA-II over accuracy and measured latency)."""
    if sweep.search != "optuna":
        return BasicVariantGenerator(
            max_concurrent=sweep.max_concurrent_trials,
            random_state=seed if sweep.search == "random" else None,
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(
        metric=list(OBJECTIVES),
        mode=[quality_mode(higher_is_better), "min"],
        sampler=optuna.samplers.NSGAIISampler(seed=seed),
    )
    return ConcurrencyLimiter(searcher, max_concurrent=sweep.max_concurrent_trials)


def scheduler(sweep: SweepConfig, max_epochs: int, higher_is_better: bool = True):
    """ASHA on validation quality: cuts fine-tuning trials that lag their rung."""
    if sweep.scheduler != "asha":
        return None
    return ASHAScheduler(
        metric=SEARCH_QUALITY,
        mode=quality_mode(higher_is_better),
        time_attr="training_iteration",
        max_t=max(2, max_epochs + 2),
        grace_period=1,
    )
