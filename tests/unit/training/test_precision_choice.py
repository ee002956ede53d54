"""``train.precision: auto`` keeps a lower precision only when it measured faster than fp32
by more than ``MIN_GAIN`` and trained stably: the rule on measured tables, and the real
measurement on a tiny model (cached once per shape)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from accelab.training.precision import (
    MIN_GAIN,
    Precision,
    auto_precision,
    cache_file,
    cache_key,
    choose,
    measure_precisions,
    resolve_precision,
    time_steps,
)
from trainables.digits import TASK

CPU = torch.device("cpu")


def table(**ms):
    """{"fp32": 10.0, "bf16": (8.0, False)} -> the measured table ``choose`` reads."""
    out = {}
    for name, v in ms.items():
        step, stable = v if isinstance(v, tuple) else (v, True)
        out[name] = {"step_ms": step, "stable": stable}
    return out


@pytest.mark.parametrize(
    ("measured", "chosen"),
    [
        (table(fp32=10.0, bf16=12.0), "fp32"),  # slower: never kept
        (table(fp32=10.0, bf16=10.0), "fp32"),  # a tie
        (table(fp32=10.0, bf16=9.6), "fp32"),  # faster, but inside MIN_GAIN (4% < 5%)
        (table(fp32=10.0, bf16=10 * (1 - MIN_GAIN)), "fp32"),  # exactly MIN_GAIN: not more
        (table(fp32=10.0, bf16=9.0), "bf16"),  # 10% faster
        (table(fp32=10.0, bf16=(5.0, False)), "fp32"),  # fast but unstable (non-finite loss)
        (table(fp32=10.0, bf16=8.0, fp16=6.0), "fp16"),  # the fastest of those that win
        (table(fp32=10.0, bf16=6.0, fp16=8.0), "bf16"),
        (table(fp32=10.0, bf16=(4.0, False), fp16=8.0), "fp16"),
        (table(fp32=10.0, bf16=11.0, fp16=12.0), "fp32"),
    ],
)
def test_a_lower_precision_is_kept_only_when_measurably_faster_and_stable(measured, chosen):
    p = choose(measured)
    assert p.name == chosen
    assert p.reason.startswith("auto (measured)")
    for name, m in measured.items():  # the reason shows every number it was chosen on
        assert f"{name} {m['step_ms']:.2f} ms/step" in p.reason


def test_the_reason_says_by_how_much_the_winner_was_faster():
    assert "bf16 2.00x faster than fp32" in choose(table(fp32=10.0, bf16=5.0)).reason
    assert "no lower precision was >5% faster" in choose(table(fp32=10.0, bf16=9.9)).reason
    assert "(unstable)" in choose(table(fp32=10.0, bf16=(5.0, False))).reason


def test_min_gain_is_a_parameter():
    assert choose(table(fp32=10.0, bf16=9.0), min_gain=0.2).name == "fp32"
    assert choose(table(fp32=10.0, bf16=9.9), min_gain=0.0).name == "bf16"


def test_an_explicit_precision_is_used_as_asked_and_auto_without_a_model_is_fp32():
    assert resolve_precision("bf16", torch.device("cpu")).name == "bf16"
    assert resolve_precision("fp16", torch.device("cpu")).reason == "requested in config"
    p = resolve_precision("auto", torch.device("cpu"))
    assert (p.name, p.reason) == ("fp32", "auto without a model to measure: fp32")


def test_auto_measures_the_real_model_follows_the_rule_and_caches_it(tmp_path, monkeypatch):
    """The real timing on this CPU: whatever it measured, the choice obeys the rule."""
    monkeypatch.setenv("ACCELAB_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = TASK.build_model("mlp", hidden=[8])  # tiny: the rule, not the speed, is tested
    batch = (torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    p = auto_precision(model, batch, TASK.loss, torch.device("cpu"))
    ms = {n: float(v) for n, v in re.findall(r"(fp32|bf16|fp16) ([\d.]+) ms/step", p.reason)}
    assert set(ms) == {"fp32", "bf16"}
    kept_lower = ms.get(p.name, 0) < ms["fp32"] * (1 - MIN_GAIN)
    assert p.name == "fp32" or kept_lower, p.reason
    if p.name == "fp32":
        assert ms["bf16"] >= ms["fp32"] * (1 - MIN_GAIN) - 0.01, p.reason
    again = auto_precision(model, batch, TASK.loss, torch.device("cpu"))
    assert again.name == p.name and again.reason == p.reason + " [cached]"
    assert (tmp_path / "precision.json").is_file()


@pytest.mark.parametrize(("name", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                             ("fp16", torch.float16)])  # fmt: skip
def test_autocast_runs_the_forward_pass_in_the_chosen_dtype(name, dtype):
    p = Precision(name, "")
    with p.autocast(torch.device("cpu")):
        assert torch.nn.Linear(4, 2)(torch.ones(1, 4)).dtype == dtype
    scaler = p.grad_scaler(torch.device("cpu"))  # only fp16 needs loss scaling
    assert scaler.is_enabled() == (name == "fp16") and scaler._device == "cpu"


def test_timing_steps_trains_a_copy_and_sees_a_loss_that_is_not_finite():
    torch.manual_seed(0)
    model = TASK.build_model("mlp", hidden=[8])
    before = [p.detach().clone() for p in model.parameters()]
    batch = (torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    seconds, finite = time_steps(model, batch, TASK.loss, Precision("fp32", ""), CPU, steps=3)
    assert seconds > 0 and finite
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    def nan_loss(logits, y):
        return TASK.loss(logits, y) * float("nan")

    assert time_steps(model, batch, nan_loss, Precision("fp32", ""), CPU, steps=1)[1] is False
    measured = measure_precisions(model, batch, nan_loss, CPU, rounds=1)
    assert set(measured) == {"fp32", "bf16"} and not any(m["stable"] for m in measured.values())
    assert choose(measured).name == "fp32"


def tiny(hidden: int = 8):
    torch.manual_seed(0)
    return TASK.build_model("mlp", hidden=[hidden]), (
        torch.rand(8, 1, 8, 8),
        torch.randint(0, 10, (8,)),
    )


def test_auto_is_cached_per_model_shape_and_batch_and_keeps_other_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELAB_CACHE_DIR", str(tmp_path / "a" / "b"))  # created on first use
    (m8, batch), (m16, _) = tiny(8), tiny(16)
    flat = (batch[0].flatten(1), batch[1])  # another input shape, the same labels
    keys = {cache_key(m8, batch, CPU), cache_key(m16, batch, CPU), cache_key(m8, flat, CPU)}
    assert len(keys) == 3
    p = resolve_precision("auto", CPU, m8, batch, TASK.loss)  # measured, not a default
    assert p.reason.startswith("auto (measured)")
    resolve_precision("auto", CPU, m16, batch, TASK.loss)
    table = json.loads((tmp_path / "a" / "b" / "precision.json").read_text())
    assert set(table) == {cache_key(m8, batch, CPU), cache_key(m16, batch, CPU)}
    assert table[cache_key(m8, batch, CPU)] == {"name": p.name, "reason": p.reason}


def test_an_unusable_cache_never_stops_training(tmp_path, monkeypatch):
    model, batch = tiny()
    (tmp_path / "precision.json").write_text("{half a fi")  # a torn or foreign file
    monkeypatch.setenv("ACCELAB_CACHE_DIR", str(tmp_path))
    assert auto_precision(model, batch, TASK.loss, CPU).reason.startswith("auto (measured)")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ACCELAB_CACHE_DIR", str(tmp_path / "file" / "dir"))  # cannot be made
    assert auto_precision(model, batch, TASK.loss, CPU).reason.startswith("auto (measured)")


def test_the_cache_lives_under_the_home_directory_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELAB_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_file() == tmp_path / ".cache" / "accelab" / "precision.json"


def test_measured_steps_are_milliseconds_and_stable_for_a_finite_loss():
    model, batch = tiny()
    measured = measure_precisions(model, batch, TASK.loss, CPU, rounds=1)
    for m in measured.values():
        assert m["stable"] is True and 1e-3 < m["step_ms"] < 1e4  # ms, not seconds/1000
    half = (None, batch, TASK.loss), (model, None, TASK.loss), (model, batch, None)
    for args in half:  # auto needs all three to measure
        assert (
            resolve_precision("auto", CPU, *args).reason == "auto without a model to measure: fp32"
        )


def test_the_reason_lists_every_measurement_exactly():
    reason = choose(table(fp32=10.0, bf16=(5.0, False))).reason
    assert reason == ("auto (measured): fp32 10.00 ms/step, bf16 5.00 ms/step (unstable); "
                      "no lower precision was >5% faster")  # fmt: skip


def test_the_cache_key_tells_apart_model_classes_and_cpus(monkeypatch):
    """A decision measured for one architecture, or on one CPU model (a home directory
    shared between machines), is not reused for another with the same parameter shapes."""
    import accelab.host

    class Other(torch.nn.Sequential):  # same parameter names and shapes, other class
        pass

    model, batch = tiny()
    twin = Other(*model)
    assert [p.shape for p in twin.parameters()] == [p.shape for p in model.parameters()]
    assert cache_key(twin, batch, CPU) != cache_key(model, batch, CPU)
    monkeypatch.setattr(accelab.host, "cpu_model", lambda: "CPU model A")
    on_a = cache_key(model, batch, CPU)
    monkeypatch.setattr(accelab.host, "cpu_model", lambda: "CPU model B")
    assert cache_key(model, batch, CPU) != on_a


def test_a_precision_unstable_in_any_round_is_unstable():
    """A non-finite loss in one round of steps makes that precision unstable, whichever
    round it was (here bf16's first round diverges and its later rounds do not)."""
    model, batch = tiny()
    bf16_steps = [0]

    def first_bf16_round_diverges(logits, y):
        loss = TASK.loss(logits, y)
        if logits.dtype == torch.bfloat16:  # under bf16 autocast
            bf16_steps[0] += 1
            if bf16_steps[0] <= 8:  # time_steps: 2 warm-up + 6 timed steps per round
                return loss * float("nan")
        return loss

    measured = measure_precisions(model, batch, first_bf16_round_diverges, CPU, rounds=3)
    assert bf16_steps[0] == 3 * 8
    assert measured["fp32"]["stable"] and not measured["bf16"]["stable"]
    assert choose(measured).name == "fp32"


def test_the_cache_key_tells_apart_thread_counts():
    """bf16's gain over fp32 depends on how many threads the kernels run on: a decision
    measured on one thread is not reused by a run on two."""
    model, batch = tiny()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cache_key(model, batch, CPU)
        torch.set_num_threads(2)
        assert cache_key(model, batch, CPU) != one
    finally:
        torch.set_num_threads(before)
