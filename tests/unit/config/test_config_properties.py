"""Property-based: whatever YAML document or override a user writes, the loader returns a
valid config or raises accelab's usage error (exit 2), never any other exception."""

from __future__ import annotations

import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelab.config import ExperimentConfig
from accelab.errors import UsageError
from accelab.preflight import load_config

SECTIONS = {
    "trainable": ["name", "model", "model_args", "data_seed"],
    "train": ["epochs", "batch_size", "lr", "optimizer", "precision", "schedule", "seed"],
    "scaling": ["num_workers", "cpus_per_worker", "threads_per_worker", "placement_strategy"],
    "compression": ["prune", "quant"],
    "finetune": ["epochs", "lr", "schedule"],
    "measure": ["batch_size", "threads", "warmup", "repeats", "rounds"],
    "sweep": ["search", "space", "variants", "constraints", "num_samples"],
    "tracking": ["uri", "experiment"],
    "run": ["storage_path", "max_failures"],
}
TRAINABLES = ["digits", "nope", "sys:exit", "os:getcwd", "trainables.digits:TASK", "x:", ":y", ""]
text = st.text(alphabet=string.ascii_letters + string.digits + " .:=-_[]{},'\"#\n\t", max_size=20)
scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True), text, st.sampled_from(TRAINABLES),
)  # fmt: skip
value = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text | st.sampled_from(sum(SECTIONS.values(), [])), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
section = st.sampled_from(list(SECTIONS)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.dictionaries(st.sampled_from(SECTIONS[name]) | text, value, max_size=4) | value,
    )
)
document = st.lists(section, max_size=5).map(dict) | value


def key_strategy():
    known = [f"{s}.{k}" for s, keys in SECTIONS.items() for k in keys]
    return st.sampled_from(known) | text


override = st.tuples(key_strategy(), st.sampled_from(["=", "", "=="]), text | st.sampled_from(
    ["3", "-1", "1e9", "[1, 2]", "{a: 1}", "true", "null", "nan", "sys:exit"]
)).map("".join)  # fmt: skip


def outcome(path, overrides) -> None:
    try:
        assert isinstance(load_config(path, overrides), ExperimentConfig)
    except UsageError as exc:
        assert exc.messages and all(isinstance(m, str) and m for m in exc.messages)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=document, overrides=st.lists(override, max_size=3))
def test_any_yaml_document_is_a_config_or_a_usage_error(tmp_path, doc, overrides):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    outcome(path, overrides)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200) | text.map(str.encode))
def test_any_bytes_are_a_config_or_a_usage_error(tmp_path, raw):
    path = tmp_path / "exp.yaml"
    path.write_bytes(raw)
    outcome(path, [])
