"""Hugging Face ``transformers`` models as plain torch modules for the rest of accelab.

A model is built from a config (``model_args.config``: a dict with ``model_type``, e.g.
``{model_type: llama, hidden_size: 64, num_hidden_layers: 2, ...}``) or loaded from a
local ``save_pretrained`` directory (``model_args.path``; ``local_files_only``: never a
download). It is wrapped so that ``forward(x)`` returns the logits tensor (no output
dicts, no KV cache): DDP, structured pruning, int8 quantization, ONNX export and the
deployable recipe all see one tensor in, one tensor out.

``transformers`` is an optional extra (``pip install -e '.[hf]'``): imported only when a
model is built, so configs of other tasks never need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

INSTALL = "the Hugging Face tasks need transformers: pip install -e '.[hf]'"


def transformers():
    try:
        import transformers as tf
    except ImportError:
        raise ImportError(INSTALL) from None
    tf.utils.logging.disable_progress_bar()  # one bar per load in every Ray worker's log
    return tf


def build(
    auto: str,
    config: dict[str, Any] | None,
    path: str | None,
    fixed: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> nn.Module:
    """``transformers.<auto>`` from ``config`` or from the directory ``path`` (exactly one).

    ``fixed`` are settings the task dictates (e.g. ``num_labels``): a config or directory
    that says otherwise is refused, not silently changed. ``defaults`` fill what a config
    leaves out (e.g. a byte-level vocabulary)."""
    tf = transformers()
    if (config is None) == (path is None):
        raise ValueError("give exactly one of model_args.config (a dict) or model_args.path")
    if config is not None:
        if not isinstance(config, dict) or "model_type" not in config:
            raise ValueError("model_args.config must be a dict with a model_type (e.g. llama)")
        settings = {**(defaults or {}), **config}
        kind = settings.pop("model_type")
        hf_config = tf.AutoConfig.for_model(kind, **settings)
    else:
        directory = Path(path).expanduser()
        if not (directory / "config.json").is_file():
            raise ValueError(
                f"model_args.path {path}: no save_pretrained directory (no config.json)"
            )
        hf_config = tf.AutoConfig.from_pretrained(str(directory), local_files_only=True)
    for key, value in fixed.items():
        have = getattr(hf_config, key, None)
        if config is not None and key not in config:
            setattr(hf_config, key, value)
        elif have != value:
            raise ValueError(f"model_args: {key} is {have}, but this task needs {value}")
    hf_config.use_cache = False  # a forward pass over the whole input, no KV cache to return
    cls = getattr(tf, auto)
    if config is not None:
        return cls.from_config(hf_config, attn_implementation="sdpa")
    return cls.from_pretrained(
        str(Path(path).expanduser()), config=hf_config, local_files_only=True,
        attn_implementation="sdpa",
    )  # fmt: skip


class TokenLogits(nn.Module):
    """(batch, time) token ids -> logits: (batch, time, vocab) for a causal LM,
    (batch, classes) for a sequence classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(input_ids=x).logits


class ImageLogits(nn.Module):
    """(batch, channels, H, W) images -> (batch, classes) logits, resized to the model's
    ``image_size`` and repeated to its ``num_channels`` where they differ (an 8x8 grey
    digit into a model made for 3x32x32)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        size = getattr(model.config, "image_size", None)
        self.size = (
            tuple(size) if isinstance(size, list | tuple) else (size, size) if size else None
        )
        self.channels = int(model.config.num_channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.size and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        return self.model(pixel_values=x).logits
