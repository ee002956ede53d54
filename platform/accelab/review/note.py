"""The sweep parent run's description (``mlflow.note.content``, rendered as markdown by the
MLflow UI): recommendation, results table, other targets, registry decision, the plot."""

from __future__ import annotations

from accelab.sweep.summary import SweepSummary
from accelab.sweep.table import (
    drop_unit,
    fmt_drop,
    fmt_speedup,
    recommendation_line,
    short,
    target_lines,
)
from accelab.tracking import names

MAX_CHARS = 7500  # MLflow caps a tag value at 8000 characters
MAX_ROWS = 40


def sweep_note(s: SweepSummary, others: list[SweepSummary], parent_id: str, registered: str) -> str:
    name = s.metric.name
    knobs = [k.split(".")[-1] for k in s.searched]
    head = ["trial", "run", *knobs, "backend", name, "drop pts [95% CI]", "val drop", "speedup [95% CI]",
            "size MB", "front"]  # fmt: skip
    rows = sorted(s.rows, key=lambda r: (not r.recommended, not r.on_front, r.trial_id))
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows[:MAX_ROWS]:
        marks = ["**recommended**" if r.recommended else "", "frontier" if r.on_front else ""]
        mark = ", ".join(m for m in marks if m)
        cells = [r.trial_id, r.name, *(short(str(r.searched.get(k, ""))) for k in s.searched),
                 r.backend, f"{r.q:.4f}" if r.q is not None else "n/a",
                 fmt_drop(s, r.q_drop, r.q_drop_lo, r.q_drop_hi), fmt_drop(s, r.val_q_drop),
                 fmt_speedup(r), f"{r.size_mb:.3f}" if r.size_mb else "", mark]  # fmt: skip
        table.append("| " + " | ".join(str(c) for c in cells) + " |")
    r = s.recommended
    headline = (
        f"### Recommended: {r.name or r.trial_id}: {fmt_speedup(r)} faster than the dense "
        f"model on {s.target[1]}, test drop {fmt_drop(s, r.q_drop, r.q_drop_lo, r.q_drop_hi)}"
        f" {drop_unit(s)[1]}"
        if r
        else f"### No recommendation on {s.target[1]}"
    )
    parts = [
        headline,
        recommendation_line(s),
        f"Target **{s.target[1]}**; speedups against the dense model measured next to each trial "
        f"in the same process; noise floor {s.noise:.0%} (the dense model against itself). "
        f"Quality on {int(s.baseline.get(names.M_N_TEST, 0))} held-out test examples; choices "
        "are made on the validation split.",
        "\n".join(table),
        (
            f"Model: trial {r.trial_id}'s `deployable_model/` and MLflow Models, in run "
            f"`{r.run_id}`; `accelab export {parent_id}` exports it."
            if r
            else ""
        ),
        *(f"- {line}" for line in target_lines(others)),
        registered,
        f"![pareto frontier](get-artifact?path=pareto.png&run_uuid={parent_id})",
    ]
    note = "\n\n".join(p for p in parts if p)
    if len(note) > MAX_CHARS:  # keep the plot and the recommendation; cut the table
        kept = [*parts[:3], "(table in pareto.csv)", parts[4], parts[-1]]
        note = "\n\n".join(p for p in kept if p)
    return note
