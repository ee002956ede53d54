"""The per-layer recipe's resolution rule on names alone (pure, microseconds; the mutation
group ``recipe`` runs these per mutant): an exact name beats every pattern, then the first
matching pattern in the mapping's order, then the global value; patterns are
case-sensitive; the float part of a backend's name; unmatched keys."""

from __future__ import annotations

from accelab.compress.recipe import (
    float_layers,
    float_name,
    resolve,
    unmatched,
    value_of,
    with_float,
)


def test_an_exact_name_wins_even_after_a_matching_pattern():
    assert value_of("enc.1", 8, {"enc.*": 4, "enc.1": 2}) == 2
    assert value_of("enc.1", 8, {"enc.1": None, "enc.*": 4}) is None  # None is a value
    assert value_of("enc.1", 8, {"enc.*": None}) is None


def test_the_first_matching_pattern_wins_then_the_default():
    recipe = {"enc.?": 3, "enc.*": 5, "*": 6}
    assert [value_of(n, 8, recipe) for n in ("enc.1", "enc.10", "head")] == [3, 5, 6]
    assert value_of("head", 8, {"enc.*": 4}) == 8
    assert value_of("head", 8, {}) == 8


def test_patterns_are_case_sensitive_and_match_the_whole_name():
    assert value_of("Head", 8, {"head": 4, "h*": 5}) == 8
    assert value_of("head.proj", 8, {"head": 4}) == 8
    assert unmatched(["Head"], {"head": 4}) == ["head"]


def test_resolve_keeps_the_order_of_the_names():
    assert list(resolve(["b", "a", "c"], 1, {"a": 2})) == ["b", "a", "c"]
    assert resolve(["b", "a"], 1, {"a": 2}) == {"b": 1, "a": 2}


def test_float_layers_are_those_resolved_to_none():
    assert float_layers(["a", "b", "c"], {"a": None, "*": 4}) == ["a"]
    assert float_layers(["a", "b"], {}) == []  # the default (0 bits here) is never float


def test_the_float_name_joins_the_float_keys_in_order():
    assert float_name({"head": None, "enc.*": 4, "enc.0": None}) == "float-head+enc.0"
    assert float_name({"enc.*": 4}) == "" and float_name({}) == ""


def test_with_float_adds_exact_names_and_keeps_the_rest():
    base = {"*": 4}
    out = with_float(base, ["head", "tail"])
    assert out == {"*": 4, "head": None, "tail": None} and base == {"*": 4}


def test_unmatched_keys_match_no_layer_name_at_all():
    assert unmatched(["enc.0", "head"], {"enc.*": 4, "head": None, "dec.*": 8}) == ["dec.*"]
    assert unmatched([], {"x": 1}) == ["x"] and unmatched(["x"], {}) == []
