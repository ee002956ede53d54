"""ONNX -> OpenVINO (CPU plugin), and int8 through NNCF post-training quantization.

The OpenVINO model is converted from the same ONNX export ONNX Runtime runs (checked
against torch once, see ``accelab.variant.targets.export_fp32``), so both runtimes start
from one graph. int8: ``nncf.quantize`` calibrated on training batches only, with NNCF's
transformer preset for language models (it keeps the attention softmax and friends out of
int8, where per-tensor activations lose quality). The import is lazy: OpenVINO and NNCF
are an optional extra (``pip install -e '.[openvino]'``).
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Iterable
from pathlib import Path

from torch import Tensor

MISSING = (
    "measure.targets: runtime openvino needs the openvino and nncf packages "
    "(pip install -e '.[openvino]')"
)


def available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))


def from_onnx(onnx: bytes):
    """The ``openvino.Model`` of ONNX bytes (read by OpenVINO's ONNX frontend)."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.onnx"
        path.write_bytes(onnx)
        return ov.convert_model(str(path))


def quantize_int8(model, calibration: Iterable[Tensor], transformer: bool):
    """NNCF post-training int8 of ``model`` (an ``openvino.Model``; not changed), calibrated
    on ``calibration`` (training batches): every batch given, not NNCF's default subset."""
    import nncf

    batches = [b.numpy() for b in calibration]
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    return nncf.quantize(
        model.clone(), nncf.Dataset(batches), subset_size=max(1, len(batches)), **kwargs
    )


def serialized_size(model) -> int:
    """Bytes of the OpenVINO IR (xml + bin) as saved, weights kept at their precision."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as d:
        ov.save_model(model, str(Path(d) / "model.xml"), compress_to_fp16=False)
        return sum(p.stat().st_size for p in Path(d).iterdir())
