"""Review in a real browser: a tiny sweep, ``accelab ui`` serving its store on 127.0.0.1,
and headless Debian Chromium (driven by Playwright) checking what a person sees: the
sweep with its trials nested under it, speed and quality drop as columns, the run's
description with the plot, pareto.png among its artifacts, the registered model with its
alias. Screenshots are kept in the test's tmp dir. Also: the registered model loads with
``mlflow.pyfunc`` in a fresh process where accelab is not importable."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from accelab.training.checkpoint import save_checkpoint
from tests.conftest import CONFIGS, run_cli
from tests.helpers_torch import trained_mlp
from tests.services import free_port, wait_http, without_accelab

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
NAME = "ui-sweep"
HIDDEN = [512, 512]

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    model, _ = trained_mlp(tuple(HIDDEN), epochs=8)
    trainable = {"name": "digits", "model": "mlp", "model_args": {"hidden": HIDDEN}, "data_seed": 0}
    save_checkpoint(
        root / "dense", model, {"loop": {}}, {"epoch": 7, "history": [], "trainable": trainable}
    )
    cfg = yaml.safe_load((CONFIGS / "digits_sweep.yaml").read_text())
    cfg.update(name=NAME)
    cfg["trainable"]["model_args"]["hidden"] = HIDDEN
    # the registered model is the ONNX file an ONNX Runtime target measured (what is served)
    targets = [{"runtime": "onnxruntime"}]
    cfg["measure"].update(repeats=30, warmup=5, rounds=5, targets=targets)
    cfg["sweep"].update(space={}, variants=[
        {"compression.prune.method": "none"},
        {"compression.prune.method": "structured", "compression.prune.sparsity": 0.3},
    ], constraints={"max_accuracy_drop": 0.05})  # fmt: skip
    (root / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    db = f"sqlite:///{root / 'mlflow.db'}"
    proc = run_cli("sweep", str(root / "sweep.yaml"), f"tracking.uri={db}", f"run.storage_path={root}/r",
                   f"sweep.baseline_from={root / 'dense'}", cwd=root)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "registered ui-sweep version 1; alias fastest-within-5pt: set" in proc.stdout, (
        proc.stdout
    )
    return root, db, proc.stdout


@pytest.fixture(scope="module")
def ui(sweep):
    root, db, _ = sweep
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "accelab", "ui", "--tracking-uri", db, "--port", str(port)],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert "on http://127.0.0.1:" in lines[0], lines
        url = re.search(r"latest sweep: (\S+)", lines[1]).group(1)
        run_url = re.search(r"\(sweep \S+: (\S+)\)", lines[1]).group(1)
        wait_http(f"http://127.0.0.1:{port}/health", 240)
        yield f"http://127.0.0.1:{port}", url, run_url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


# a hang guard only: MLflow's UI renders slowly on a loaded machine, it is not broken
UI_WAIT_MS = 180_000


def test_a_reviewer_sees_the_sweep_its_trials_the_plot_and_the_registered_model(sweep, ui):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    root, _, _ = sweep
    base, url, run_url = ui
    assert "workflowType=machine_learning" in url and "viewStateShareKey=accelab" in url
    shots = root / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1700, "height": 1000})
        page.set_default_timeout(UI_WAIT_MS)  # clicks and page loads too
        page.goto(url)  # the printed link: the runs table, not the GenAI overview
        sweep_row = page.get_by_text(re.compile(r"^sweep-\d{4}-\d{6}$")).first
        sweep_row.wait_for(timeout=UI_WAIT_MS)
        for column in ("speedup", "accuracy_drop", "val_accuracy_drop", "size_ratio"):
            assert page.get_by_role("columnheader", name=column).count() >= 1, column
        page.locator('button[data-component-id$="runnamecellrenderer.tsx_46"]').first.click()
        for trial in ("dense", "structured-0.3"):  # short names say what each trial is
            page.get_by_text(trial, exact=True).first.wait_for(timeout=UI_WAIT_MS)
        page.screenshot(path=str(shots / "runs.png"))

        page.goto(run_url)  # the sweep's own page (printed too): description with table and plot
        page.get_by_text(re.compile("Recommended: structured-0.3")).first.wait_for(
            timeout=UI_WAIT_MS
        )
        page.get_by_text("Show more").first.click()
        # where the model is: the recommended trial's run (no copy on the sweep)
        page.get_by_text(re.compile(r"deployable_model/")).first.wait_for(timeout=UI_WAIT_MS)
        image = page.locator("img[src*='pareto.png']").first
        image.wait_for(timeout=UI_WAIT_MS)
        page.wait_for_function("(e) => e.complete && e.naturalWidth > 1000", arg=image.element_handle(),
                               timeout=UI_WAIT_MS)  # fmt: skip
        assert page.get_by_text(re.compile(r"\d\.\d\dx \(\d\.\d\d-\d\.\d\d\)")).count() >= 1
        page.screenshot(path=str(shots / "sweep.png"), full_page=True)
        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("pareto.png").first.wait_for(timeout=UI_WAIT_MS)
        page.get_by_text("pareto.csv").first.wait_for(timeout=UI_WAIT_MS)
        assert page.get_by_text("recommended_model").count() == 0  # the trial keeps it
        page.screenshot(path=str(shots / "artifacts.png"))

        page.goto(f"{base}/#/models/{NAME}")
        page.get_by_text("fastest-within-5pt").first.wait_for(timeout=UI_WAIT_MS)
        page.screenshot(path=str(shots / "registry.png"))
        browser.close()
    print(f"\nscreenshots: {sorted(p.name for p in shots.iterdir())} in {shots}")


LOAD = """
import importlib.util, json, sys
import numpy as np, mlflow
assert importlib.util.find_spec("accelab") is None
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
d = np.load(sys.argv[3])
out = model.predict(d["x"])
out = out["output"] if isinstance(out, dict) else out
print(json.dumps({"accuracy": float((np.asarray(out).argmax(1) == d["y"]).mean())}))
"""


def test_the_registered_recommendation_loads_with_pyfunc_without_accelab(sweep, tmp_path):
    import json

    import numpy as np
    from mlflow.tracking import MlflowClient

    from trainables.digits import TASK

    root, db, _ = sweep
    client = MlflowClient(db)
    version = client.get_model_version_by_alias(NAME, "fastest-within-5pt")
    assert (
        version.tags["accelab.backend"].startswith("ort-")
        and "x (" in version.tags["accelab.speedup"]
    )
    assert version.tags["accelab.target"] == "ort_b64" and "pixel values" in version.description
    assert "points of test accuracy on 270 examples" in version.tags["accelab.quality_drop"]
    test = TASK.load_splits(0).test
    data = tmp_path / "test.npz"
    np.savez(data, x=test.tensors[0].numpy(), y=test.tensors[1].numpy())
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **without_accelab(tmp_path / "hide")}
    proc = subprocess.run([sys.executable, "-c", LOAD, db, f"models:/{NAME}@fastest-within-5pt", str(data)],
                          env=env, capture_output=True, text=True, timeout=300, cwd="/")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    trial = client.get_run(version.run_id).data.metrics
    accuracy = json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"]
    # the MLflow Model is the ONNX form of what was measured: same predictions
    assert accuracy == pytest.approx(trial["accuracy"], abs=1 / 270 + 1e-9)
