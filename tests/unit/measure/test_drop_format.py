"""One drop formatter for every view (compress output, sweep table, MLflow note): x100 with
the unit the metric's drop is in (points of a proportion, percent of a relative metric)."""

from __future__ import annotations

from accelab.measure.quality import drop_unit, format_drop


def test_a_drop_prints_x100_with_its_interval_and_unit():
    assert format_drop(0.0123, 0.004, 0.021) == "+1.23 [+0.40,+2.10]"
    assert format_drop(-0.002) == "-0.20"
    assert format_drop(None) == "n/a"
    assert drop_unit(relative=False) == "pts" and drop_unit(relative=True) == "%"
