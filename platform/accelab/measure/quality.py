"""A task's quality metric on a split, per example, so that every number carries its
sample size and a 95% interval, and every drop is a paired comparison on the same examples.

``drop`` is positive when the variant is worse: for a higher-is-better metric (accuracy)
it is ``baseline - variant`` in metric units (0.01 = one point); for an ``exp``-transformed
mean (perplexity) it is relative, ``variant / baseline - 1`` (0.02 = 2% higher perplexity).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from accelab.measure.runners import Runner
from accelab.stats import (
    Estimate,
    mean_interval,
    paired_mean_drop,
    paired_proportion_drop,
    wilson,
)
from trainables.base import Metric, Task
from trainables.splits import batches


def per_example(runner: Runner, dataset, task: Task, batch_size: int = 256, fn=None) -> Tensor:
    """The task's per-example values (1/0 correct for accuracy, a loss for a language model;
    or ``fn``'s, e.g. a secondary metric) of ``runner`` on every example, in order; the split
    (any kind, ``trainables.splits``) is read batch by batch."""
    fn = fn or task.per_example
    out = []
    with runner.active():
        for x, y in batches(dataset, batch_size):
            logits = runner(x).float().cpu()
            out.append(fn(logits, y))
    return torch.cat(out).double()


def _exp(e: Estimate) -> Estimate:
    return Estimate(math.exp(e.value), math.exp(e.lo), math.exp(e.hi), e.n)


def estimate(values: Tensor, metric: Metric) -> Estimate:
    """The metric with its 95% interval: Wilson for a proportion, t for a mean."""
    if metric.kind == "proportion":
        return wilson(int(values.sum().round()), len(values))
    e = mean_interval(values.tolist())
    return _exp(e) if metric.transform == "exp" else e


def drop(base: Tensor, variant: Tensor, metric: Metric) -> Estimate:
    """How much worse ``variant`` is than ``base`` on the same examples (paired interval)."""
    if metric.kind == "proportion":
        d = paired_proportion_drop((base > 0.5).tolist(), (variant > 0.5).tolist())
    else:
        d = paired_mean_drop(base.tolist(), variant.tolist())  # base - variant, per example
    if metric.transform == "exp":  # relative: exp(variant - base) - 1
        return Estimate(math.exp(-d.value) - 1, math.exp(-d.hi) - 1, math.exp(-d.lo) - 1, d.n)
    if metric.higher_is_better:
        return d
    return Estimate(-d.value, -d.hi, -d.lo, d.n)


def drop_unit(relative: bool) -> str:
    """A relative drop (perplexity) prints as percent, one in metric units as points (x100)."""
    return "%" if relative else "pts"


def format_drop(value: float | None, lo=None, hi=None, relative: bool = False) -> str:
    """``+1.23 [+0.40,+2.10]``: the drop x100 (points of accuracy, or percent of a relative
    metric), with its interval when given; ``n/a`` without a value."""
    if value is None:
        return "n/a"
    text = f"{value * 100:+.2f}"
    if lo is not None and hi is not None:
        text += f" [{lo * 100:+.2f},{hi * 100:+.2f}]"
    return text
