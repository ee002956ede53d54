"""``accelab sensitivity`` through the real CLI on a small digits MLP (trained in plain
torch, saved as an accelab checkpoint): bad input exits 2 before any MLflow run; a real
run prints the table sorted by drop and logs one MLflow run with a metric per layer and
setting, the CSV and the plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mlflow.tracking import MlflowClient

from accelab.training.checkpoint import save_checkpoint
from tests.conftest import CONFIGS, run_cli
from tests.helpers_torch import trained_mlp

MLP = str(CONFIGS / "digits_mlp.yaml")
HIDDEN = "trainable.model_args.hidden=[64,64]"
TRAINABLE = {"name": "digits", "model": "mlp", "model_args": {"hidden": [64, 64]}, "data_seed": 0}


def test_sensitivity_cli(tmp_path: Path, store):
    model, _ = trained_mlp((64, 64), epochs=3)
    ckpt = tmp_path / "mlp"
    save_checkpoint(ckpt, model, {"loop": {}}, {"epoch": 2, "history": [], "trainable": TRAINABLE})
    base = ["sensitivity", MLP, HIDDEN, *store["overrides"], "--from", str(ckpt)]

    missing = run_cli("sensitivity", MLP, cwd=tmp_path)
    assert missing.returncode == 2 and "--from" in missing.stderr
    bad = run_cli(*base, "--bits", "16", "--layers", "9", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert "--bits 16: bits must be an integer in 2..8" in bad.stderr
    assert "--layers: no such layer ['9']" in bad.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing ran, no store was created

    proc = run_cli(*base, "--bits", "8", "2", "--sparsity", "0.9", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("layer"))
    table = [line.split() for line in lines[header + 1 :]]
    assert len(table) == 3 * 3  # layers 1, 3, 5 x int8, int2, sparsity0.9
    drops = [float(row[2]) for row in table]
    assert drops == sorted(drops, reverse=True)
    assert {row[1] for row in table[:3]} <= {"int2", "sparsity0.9"}  # int8 is never worst

    client = MlflowClient(store["tracking_uri"])
    (run,) = client.search_runs(client.get_experiment_by_name("digits-mlp").experiment_id)
    assert run.data.tags["accelab.kind"] == "sensitivity" and run.info.status == "FINISHED"
    assert {"val_drop.int8.1", "val_drop.int2.5_lo", "val_drop.sparsity0.9.3_hi"} <= set(
        run.data.metrics
    )
    assert run.data.params["bits"] == "8 2" and run.data.params["split"] == "val"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"sensitivity.csv", "sensitivity.png"} <= names
    text = Path(client.download_artifacts(run.info.run_id, "sensitivity.csv", str(tmp_path)))
    rows = list(csv.DictReader(io.StringIO(text.read_text())))
    assert [float(r["drop"]) for r in rows] == sorted(
        (float(r["drop"]) for r in rows), reverse=True
    )
    assert (
        abs(
            float(rows[0]["drop"])
            - run.data.metrics[f"val_drop.{rows[0]['setting']}.{rows[0]['layer']}"]
        )
        < 1e-12
    )
