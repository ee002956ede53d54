"""A Hugging Face image classifier (ViT, ResNet, ConvNeXt, ... from ``transformers``) on the
digits images: 1x8x8 grey images, resized and repeated to the model's ``image_size`` and
``num_channels`` by the wrapper (``models.ImageLogits``) where a loaded model wants more.

A model built from a config defaults to the images as they are (8x8, one channel).
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from trainables import digits
from trainables.hf.models import ImageLogits, build
from trainables.hf.text import MLP_UNITS


def image_classifier(config: dict | None = None, path: str | None = None) -> nn.Module:
    model = build("AutoModelForImageClassification", config, path,
                  fixed={"num_labels": digits.NUM_CLASSES},
                  defaults={"image_size": digits.INPUT_SHAPE[-1], "num_channels": 1})  # fmt: skip
    return ImageLogits(model)


IMAGE_CLASSIFIER = replace(
    digits.TASK,
    name="hf_image_classifier",
    models={"image_classifier": image_classifier},
    structured_only=MLP_UNITS,
)
