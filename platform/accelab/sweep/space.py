"""The YAML ``sweep`` section -> Tune param space, search algorithm and scheduler."""

from __future__ import annotations

from typing import Any

from accelab.config.schema import Distribution, SweepConfig
from accelab.errors import ConfigError

# Objectives for multi-objective search: measured accuracy up, latency down.
OBJECTIVES = ("accuracy", "search_latency_ms")
MODES = ("max", "min")


def tune_domain(dist: Distribution) -> Any:
    from ray import tune

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
    """Flat ``{"compression.prune.sparsity": domain, ...}``; trials get dotted keys back."""
    return {key: tune_domain(dist) for key, dist in sweep.space.items()}


def check_search(sweep: SweepConfig) -> None:
    """Search-specific rules (Optuna samples, it does not enumerate grids)."""
    if sweep.search == "optuna":
        grids = [k for k, d in sweep.space.items() if d.kind == "grid"]
        if grids:
            raise ConfigError(
                [
                    f"sweep.space.{k}: grid is not supported by search=optuna; use choice"
                    for k in grids
                ]
            )
    if sweep.search != "grid" and not sweep.space:
        raise ConfigError("sweep.space: empty; nothing to search")


def search_alg(sweep: SweepConfig, seed: int):
    """None (Tune's grid/random variant generator) or Optuna's multi-objective search."""
    if sweep.search != "optuna":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(
        metric=list(OBJECTIVES), mode=list(MODES), sampler=optuna.samplers.NSGAIISampler(seed=seed)
    )


def scheduler(sweep: SweepConfig, max_epochs: int):
    """ASHA on validation accuracy: cuts fine-tuning trials that lag their rung."""
    if sweep.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        metric="val_accuracy",
        mode="max",
        time_attr="training_iteration",
        max_t=max(2, max_epochs + 2),
        grace_period=1,
    )
