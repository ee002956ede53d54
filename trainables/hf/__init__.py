"""Hugging Face ``transformers`` tasks (optional extra ``pip install -e '.[hf]'``).

- ``text.CAUSAL_LM`` (``hf_causal_lm``): a causal LM on pylm's standard library corpus,
  byte-level tokens, perplexity; ``text.causal_lm_task(dir)``: the same text tokenized by
  the tokenizer of a local ``save_pretrained`` directory (a task of your own module).
- ``text.TEXT_CLASSIFIER`` (``hf_text_classifier``): a sequence classifier telling test
  code from library code in windows of the same corpus, accuracy.
- ``vision.IMAGE_CLASSIFIER`` (``hf_image_classifier``): an image classifier (ViT, ResNet,
  ...) on the digits images, resized to the model's input where needed, accuracy.

Each model is built from ``trainable.model_args.config`` or loaded from a local
``save_pretrained`` directory ``trainable.model_args.path`` (``models.build``).
"""
