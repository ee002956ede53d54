"""``accelab compress`` on ONNX Runtime int4 printed dozens of onnx_ir/onnxscript INFO lines
("Replaced initializer 'val_74' with existing initializer ...") per export: ORT's MatMulNBits
quantizer module calls ``logging.basicConfig(level=INFO)`` on import, and every later
dynamo export's graph passes log at INFO. The export must stay quiet even with such a root
handler, and the import must leave the root logger as it was."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from torch import nn

from accelab.export.onnx import quiet_import, to_onnx


class Twins(nn.Module):
    """Two Linear layers with equal weights: the exporter's initializer deduplication
    pass replaces one with the other (and logs it at INFO), as in a GPT's tied copies."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 10), nn.Linear(64, 10)
        self.b.load_state_dict(self.a.state_dict())

    def forward(self, x):
        return self.a(x) + self.b(x)


@pytest.fixture
def info_root_handler(capsys):
    """What the quantizer's import leaves behind: a root handler on stderr (capsys's, so
    it is set up first) at INFO."""
    root = logging.getLogger()
    handler, level = logging.StreamHandler(sys.stderr), root.level
    handler.setFormatter(logging.Formatter("%(name)s [%(levelname)s] - %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield
    root.removeHandler(handler)
    root.setLevel(level)


def test_dynamo_export_prints_no_onnx_ir_info(info_root_handler, capsys):
    to_onnx(Twins(), torch.zeros(2, 64), "dynamo")
    err = capsys.readouterr().err
    assert "onnx_ir" not in err and "Replaced initializer" not in err, err[:500]
    assert "onnxscript" not in err, err[:500]


def test_quiet_import_restores_the_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with quiet_import():
        logging.basicConfig(format="%(name)s [%(levelname)s] - %(message)s",
                            level=logging.INFO, force=True)  # fmt: skip
    assert root.handlers == handlers and root.level == level
