"""``accelab export``: a run's model in a format that runs without accelab.

    onnx          fp32 ONNX (dynamic batch): ONNX Runtime, or any ONNX runtime
    onnx-int8     ONNX Runtime int8 (the run's quant.scheme: dynamic, or static QDQ)
    torch-export  torch.export program (.pt2): ``torch.export.load`` needs torch only
    openvino      OpenVINO IR (.xml + .bin), fp32 weights (the [openvino] extra)
    openvino-int8 OpenVINO IR, NNCF post-training int8 calibrated on training data

A sweep run exports its recommended trial (the sweep's ``accelab.recommended_run_id``).
Where the run measured that very ONNX model (an ONNX Runtime target), the file written is
the one that was measured, byte for byte; otherwise it is made now from the run's fp32
weights and checked against torch. Files are written to ``--out`` and logged with the run
under ``export/``, next to a ``<file>.json`` (what the file expects, what was measured).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from accelab.compress.deploy import builder, load_float, read_recipe
from accelab.compress.pipeline import calibration_from
from accelab.errors import UsageError
from accelab.export import files
from accelab.tracking import names
from accelab.tracking.client import tracking_store

FORMATS = {"onnx": "model.onnx", "onnx-int8": "model_int8.onnx", "torch-export": "model.pt2",
           "openvino": "model_openvino.xml", "openvino-int8": "model_openvino_int8.xml"}  # fmt: skip


def resolve_run(client, source: str) -> str:
    """A run id from ``runs:/<id>``, a bare run id, or ``models:/<name>@<alias>`` /
    ``models:/<name>/<version>`` (the registered version's source run)."""
    try:
        if source.startswith("models:/"):
            name, _, ref = source[len("models:/") :].partition("@")
            if ref:
                return client.get_model_version_by_alias(name, ref).run_id
            name, _, version = name.partition("/")
            return client.get_model_version(name, version).run_id
        run_id = source[len("runs:/") :].split("/")[0] if source.startswith("runs:/") else source
        return client.get_run(run_id).info.run_id
    except MlflowException as exc:
        raise UsageError(f"{source}: not found in MLflow ({exc.message.splitlines()[0]})") from None


DEPLOYABLE = "deployable_model"


def deployable_run(client, run_id: str) -> str:
    """The run whose ``deployable_model/`` is exported: the run's own (compress, trial), or
    the recommended trial's for a sweep (the sweep keeps no copy)."""
    if DEPLOYABLE in {a.path for a in client.list_artifacts(run_id)}:
        return run_id
    if recommended := client.get_run(run_id).data.tags.get(names.RECOMMENDED_RUN):
        return recommended
    raise UsageError(
        f"run {run_id} has no {DEPLOYABLE}/ artifact and recommends no trial (export a "
        "compress run, a sweep trial, or a sweep with a recommendation)"
    )


def measured_onnx(client, run_id: str, backends: list[str], tmp: Path) -> Path | None:
    names = {a.path for a in client.list_artifacts(run_id, "onnx")}
    for backend in backends:
        if f"onnx/{backend}.onnx" in names:
            return Path(client.download_artifacts(run_id, f"onnx/{backend}.onnx", str(tmp)))
    return None


def export(
    source: str, fmt: str, out: str | None, tracking_uri: str | None,
    echo: Callable[[str], None] = print,
) -> Path:  # fmt: skip
    client = MlflowClient(tracking_store(tracking_uri, "--tracking-uri", must_exist=True))
    asked = resolve_run(client, source)
    run_id = deployable_run(client, asked)
    target = Path(out or f"export/{asked}").expanduser().resolve()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(client.download_artifacts(run_id, DEPLOYABLE, tmp))
        recipe = read_recipe(directory)
        task, _ = builder(recipe)
        scheme = (recipe.get("quant") or {}).get("scheme", "dynamic")
        wanted = {"onnx": ["ort-fp32"], "onnx-int8": [f"ort-int8-{scheme}"]}.get(fmt, [])
        found = measured_onnx(client, run_id, wanted, Path(tmp))
        target.mkdir(parents=True, exist_ok=True)
        path = target / FORMATS[fmt]
        quant, seed = recipe.get("quant") or {}, recipe["trainable"].get("data_seed", 0)
        calibration = calibration_from(task, seed, 64, quant.get("calibration_batches", 8))
        info = files.write(fmt, load_float(directory), task, path, found, scheme, calibration)
    info.update(source=source, run_id=run_id, tracking_uri=client.tracking_uri,
                measured=_measured(client.get_run(run_id), info["backend"]))  # fmt: skip
    facts = path.with_suffix(".json")  # model.json, model_int8.json: one per format
    facts.write_text(json.dumps(info, indent=1))
    client.log_artifact(run_id, str(path), "export")
    if path.suffix == ".xml":  # an OpenVINO IR's weights
        client.log_artifact(run_id, str(path.with_suffix(".bin")), "export")
    client.log_artifact(run_id, str(facts), "export")
    echo(f"wrote {path} ({info['note']}); logged to MLflow run {run_id} under export/")
    return path


def _measured(run, backend: str) -> dict[str, float]:
    """What the run measured on this backend (quality, latency), for comparison."""
    m, tags = run.data.metrics, run.data.tags
    if tags.get(names.BACKEND) == backend:
        return {k: v for k, v in m.items() if "." not in k}
    prefix = names.for_target(names.BACKEND, "")  # "accelab.backend." + target key
    for key, value in tags.items():
        if key.startswith(prefix) and value == backend:
            sfx = names.suffix(key.removeprefix(prefix), primary=False)
            return {k.removesuffix(sfx): v for k, v in m.items() if k.endswith(sfx)}
    return {}
