"""The quality numbers of ``accelab.measure.quality`` on values the test chooses (pure,
milliseconds; the mutation group ``quality`` runs these per mutant): which interval each
kind of metric gets, the sign and scale of every drop (points of a proportion, loss units
of a lower-is-better mean, relative for perplexity), and per-example values in order,
batch by batch, on the runner's threads."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from accelab.measure.quality import drop, estimate, format_drop, per_example
from accelab.measure.runners import TorchRunner
from accelab.stats import Estimate, mean_interval, paired_mean_drop, paired_proportion_drop, wilson
from trainables.base import Metric
from trainables.digits import TASK

ACCURACY = Metric()
LOSS = Metric("loss", higher_is_better=False, kind="mean")
SCORE = Metric("score", higher_is_better=True, kind="mean")
PERPLEXITY = Metric("perplexity", higher_is_better=False, kind="mean", transform="exp")

BASE = torch.tensor([1.0, 2.0, 3.0, 2.5, 1.5, 2.2], dtype=torch.float64)
WORSE = BASE + torch.tensor([0.1, 0.3, 0.0, 0.2, 0.1, 0.5], dtype=torch.float64)


def same(a: Estimate, b: Estimate) -> bool:
    return (a.value, a.lo, a.hi, a.n) == pytest.approx((b.value, b.lo, b.hi, b.n), rel=1e-12)


def test_a_proportion_gets_wilsons_interval_from_the_count():
    values = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert estimate(values, ACCURACY) == wilson(5, 7)


def test_a_mean_gets_a_t_interval_and_an_exp_metric_exponentiates_every_bound():
    assert estimate(BASE, LOSS) == mean_interval(BASE.tolist())
    e, m = estimate(BASE, PERPLEXITY), mean_interval(BASE.tolist())
    assert same(e, Estimate(math.exp(m.value), math.exp(m.lo), math.exp(m.hi), 6))


def test_an_accuracy_drop_is_paired_in_points_positive_when_worse():
    base = torch.tensor([1, 1, 1, 0, 1, 0, 1, 1], dtype=torch.float64)
    var = torch.tensor([1, 0, 0, 0, 1, 1, 1, 0], dtype=torch.float64)
    d = drop(base, var, ACCURACY)
    assert d == paired_proportion_drop([b > 0.5 for b in base], [v > 0.5 for v in var])
    assert d.value == pytest.approx(2 / 8) and d.n == 8


def test_a_lower_is_better_mean_drop_is_the_increase_with_its_interval_flipped():
    d, raw = drop(BASE, WORSE, LOSS), paired_mean_drop(BASE.tolist(), WORSE.tolist())
    assert same(d, Estimate(-raw.value, -raw.hi, -raw.lo, 6))
    assert d.value == pytest.approx(0.2) and d.lo < d.value < d.hi


def test_a_higher_is_better_mean_drop_is_base_minus_variant():
    assert drop(WORSE, BASE, SCORE) == paired_mean_drop(WORSE.tolist(), BASE.tolist())
    assert drop(WORSE, BASE, SCORE).value == pytest.approx(0.2)


def test_a_perplexity_drop_is_relative_the_ratio_of_perplexities_minus_one():
    d, raw = drop(BASE, WORSE, PERPLEXITY), paired_mean_drop(BASE.tolist(), WORSE.tolist())
    expected = Estimate(math.exp(-raw.value) - 1, math.exp(-raw.hi) - 1, math.exp(-raw.lo) - 1, 6)
    assert same(d, expected)
    ratio = estimate(WORSE, PERPLEXITY).value / estimate(BASE, PERPLEXITY).value
    assert d.value == pytest.approx(ratio - 1) and d.lo < d.value < d.hi
    assert drop(WORSE, BASE, PERPLEXITY).value == pytest.approx(1 / ratio - 1)  # better: < 0


def test_a_drop_prints_its_interval_only_with_both_bounds():
    assert format_drop(0.5, lo=0.1) == "+50.00" and format_drop(0.5, hi=0.9) == "+50.00"
    assert format_drop(0.0, -0.00004, 0.00006) == "+0.00 [-0.00,+0.01]"
    assert format_drop(0.1, -0.5, 0.75) == "+10.00 [-50.00,+75.00]"  # both bounds x100


class Doubler(torch.nn.Module):
    """Logits that put the argmax on class ``2 * x[0] % 3``; records the threads it ran on."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.threads: list[int] = []

    def forward(self, x):
        self.threads.append(torch.get_num_threads())
        cls = (2 * x[:, 0].long()) % 3
        return torch.nn.functional.one_hot(cls, 3).float() * self.scale


def test_per_example_values_are_in_order_batch_by_batch_on_the_runners_threads():
    x = torch.arange(7, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor([0, 2, 1, 1, 2, 2, 0])  # predicted 0 2 1 0 2 1 0
    model = Doubler()
    threads = 2 if torch.get_num_threads() != 2 else 3
    values = per_example(TorchRunner(model, threads=threads), TensorDataset(x, y),
                         TASK, batch_size=3)  # fmt: skip
    assert values.dtype == torch.float64
    assert values.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert model.threads == [threads] * 3  # 3 + 3 + 1 examples
    custom = per_example(TorchRunner(model), TensorDataset(x, y), TASK, batch_size=4,
                         fn=lambda logits, y: y.float() * 10)  # fmt: skip
    assert custom.tolist() == [0.0, 20.0, 10.0, 10.0, 20.0, 20.0, 0.0]
