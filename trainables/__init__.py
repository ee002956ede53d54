"""Tasks users train: each module exposes a ``Task`` (dataset splits + model builders).

A config names a task by registry name (a key of ``REGISTRY``) or by import path
``package.module:attr``; see ``accelab.tasks.resolve_task``.
"""

REGISTRY: dict[str, str] = {
    "digits": "trainables.digits:TASK",
    "pylm": "trainables.pylm:TASK",
    # the digits as Ray Data splits read from Parquet files (Ray Train shards them)
    "digits_parquet": "trainables.digits_parquet:TASK",
    # Hugging Face transformers models (extra: pip install -e '.[hf]')
    "hf_causal_lm": "trainables.hf.text:CAUSAL_LM",
    "hf_text_classifier": "trainables.hf.text:TEXT_CLASSIFIER",
    "hf_image_classifier": "trainables.hf.vision:IMAGE_CLASSIFIER",
}
