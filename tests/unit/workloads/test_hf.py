"""Hugging Face tasks (extra ``.[hf]``): each builds from a config and from a local
``save_pretrained`` directory into a plain torch module (one tensor in, logits out) that
exports to ONNX; a directory of weights is a ``--from`` source; and a ViT image classifier
trains on the digits and goes through structured pruning + int8 on torch and ORT."""

from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("transformers")

from accelab.compress.prune import apply_structured  # noqa: E402
from accelab.config.schema import ExperimentConfig  # noqa: E402
from accelab.export.onnx import max_abs_diff, to_onnx  # noqa: E402
from accelab.training.checkpoint import META_FILE, save_checkpoint  # noqa: E402
from accelab.training.epoch import fit  # noqa: E402
from accelab.variant.run import run_variant  # noqa: E402
from accelab.variant.setup import Setup  # noqa: E402
from accelab.variant.sources import prepare_source  # noqa: E402
from trainables.hf.text import CAUSAL_LM, TEXT_CLASSIFIER  # noqa: E402
from trainables.hf.vision import IMAGE_CLASSIFIER  # noqa: E402

SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 2}  # fmt: skip
LLAMA = {"model_type": "llama", "num_key_value_heads": 2, **SMALL}
CASES = {
    "causal_lm-llama": (CAUSAL_LM, "causal_lm", LLAMA, (2, 128, 256)),
    "sequence_classifier-bert": (
        TEXT_CLASSIFIER,
        "sequence_classifier",
        {"model_type": "bert", **SMALL},
        (2, 2),
    ),  # fmt: skip
    "image_classifier-vit": (
        IMAGE_CLASSIFIER,
        "image_classifier",
        {"model_type": "vit", "patch_size": 2, **SMALL},
        (2, 10),
    ),  # fmt: skip
}


def example(task, n: int = 2) -> torch.Tensor:
    if task.input_dtype == torch.int64:
        return torch.randint(
            1, 256, (n, *task.input_shape), generator=torch.Generator().manual_seed(0)
        )
    return torch.rand(n, *task.input_shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("case", sorted(CASES))
def test_built_from_a_config_or_a_directory_it_is_one_tensor_in_logits_out(case, tmp_path):
    task, name, config, shape = CASES[case]
    torch.manual_seed(0)
    model = task.build_model(name, config=config).eval()
    x = example(task)
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and tuple(logits.shape) == shape
    model.model.save_pretrained(tmp_path / "saved")
    loaded = task.build_model(name, path=str(tmp_path / "saved")).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), logits)
    onnx = to_onnx(model, x)
    assert max_abs_diff(model, onnx, example(task, 3)) < 1e-4  # a batch other than the export's


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, "exactly one of model_args.config"),
        ({"config": {"hidden_size": 8}}, "with a model_type"),
        ({"config": {**LLAMA, "num_labels": 5}}, "num_labels is 5, but this task needs 2"),
        ({"path": "/no/such/dir"}, "no save_pretrained directory (no config.json)"),
    ],
)
def test_bad_model_args_name_what_is_wrong(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TEXT_CLASSIFIER.build_model("sequence_classifier", **args)


def test_a_directory_loaded_model_gets_the_digits_resized_to_its_input(tmp_path):
    """A ViT saved for 3x16x16 images: 1x8x8 digits are resized and repeated to fit."""
    from transformers import ViTConfig, ViTForImageClassification

    vit = ViTForImageClassification(ViTConfig(image_size=16, num_channels=3, patch_size=4,
                                              num_labels=10, **SMALL))  # fmt: skip
    vit.save_pretrained(tmp_path)
    model = IMAGE_CLASSIFIER.build_model("image_classifier", path=str(tmp_path)).eval()
    assert tuple(model(IMAGE_CLASSIFIER.example_input(2)).shape) == (2, 10)


def test_a_save_pretrained_directory_is_a_from_source_tied_weights_and_all(tmp_path):
    """HF saves an LM head tied to its embedding once, without the adapter's ``model.``
    prefix: staged as a checkpoint of the configured model, outputs unchanged."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = {**LLAMA, "tie_word_embeddings": True}
    settings = {k: v for k, v in config.items() if k != "model_type"}
    torch.manual_seed(1)
    hf = AutoModelForCausalLM.from_config(
        AutoConfig.for_model("llama", vocab_size=256, max_position_embeddings=128, **settings)
    ).eval()
    hf.save_pretrained(tmp_path / "mine")
    cfg = ExperimentConfig.model_validate(
        {
            "trainable": {
                "name": "hf_causal_lm",
                "model": "causal_lm",
                "model_args": {"config": config},
            },
            "run": {"storage_path": str(tmp_path / "results")},
        }  # fmt: skip
    )
    dense = prepare_source(Setup.of(cfg), str(tmp_path / "mine"), tracking_uri="")
    assert json.loads((dense / META_FILE).read_text())["source"].endswith("model.safetensors")
    from accelab.variant.judge import load_dense

    model = load_dense(Setup.of(cfg), dense).model
    x = example(CAUSAL_LM)
    with torch.no_grad():
        assert torch.equal(model(x), hf(input_ids=x).logits)


def test_structured_pruning_removes_gated_mlp_units_of_a_llama():
    model = CAUSAL_LM.build_model("causal_lm", config=LLAMA).eval()
    pruned = apply_structured(copy.deepcopy(model), 0.5, example(CAUSAL_LM),
                              only=CAUSAL_LM.structured_only)  # fmt: skip
    mlp = pruned.model.model.layers[0].mlp
    assert (mlp.gate_proj.out_features, mlp.up_proj.out_features, mlp.down_proj.in_features) == (
        32, 32, 32)  # fmt: skip
    attn = pruned.model.model.layers[0].self_attn
    assert attn.q_proj.out_features == 32  # the residual width and attention are untouched


def test_a_vit_trains_on_digits_then_prunes_and_runs_int8_on_torch_and_ort(tmp_path):
    cfg = ExperimentConfig.model_validate(
        {
            "trainable": {
                "name": "hf_image_classifier",
                "model": "image_classifier",
                "model_args": {"config": CASES["image_classifier-vit"][2]},
            },
            "compression": {
                "prune": {"method": "structured", "sparsity": 0.5},
                "quant": {"bits": 8},
            },
            "measure": {
                "rounds": 2,
                "warmup": 1,
                "repeats": 5,
                "targets": [{"runtime": "torch"}, {"runtime": "onnxruntime"}],
            },
        }  # fmt: skip
    )
    torch.manual_seed(0)
    model = IMAGE_CLASSIFIER.build_model("image_classifier", **cfg.trainable.model_args)
    model = fit(model, IMAGE_CLASSIFIER.load_splits(0).train, 6, loss=IMAGE_CLASSIFIER.loss,
                lr=3e-3)  # fmt: skip
    directory = tmp_path / "dense"
    save_checkpoint(directory, model, {"loop": {}},
                    {"epoch": 0, "history": [], "trainable": cfg.trainable.model_dump()})  # fmt: skip
    m = run_variant(Setup.of(cfg), directory, tracking_uri="", run_id=None, ray_name="x").metrics
    assert m["baseline_accuracy"] > 0.6, m  # it learned the digits (chance is 0.1)
    assert m["params"] < 0.8 * sum(p.numel() for p in model.parameters())  # MLP units removed
    for sfx in ("", ".ort_b64"):  # int8 on real kernels on both runtimes, quality kept
        assert m[f"simulated{sfx}"] == 0.0 and m[f"accuracy{sfx}"] > 0.6, m
        assert m[f"size_ratio{sfx}"] < 0.8, m
    assert m["export_max_abs_diff.ort_b64"] < 1e-4


def test_a_tokenizer_directory_tokenizes_the_corpus_for_a_causal_lm(tmp_path):
    """A BPE tokenizer saved with ``save_pretrained`` (trained here, offline): the task's
    windows are its ids, decoding back to the corpus text, and the model gets its vocab."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from trainables import pylm
    from trainables.hf.text import causal_lm_task

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    chunks, _, _ = pylm.corpus()
    tok.train_from_iterator([c.decode("utf-8", "replace") for c in chunks["train"][:40]], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(tmp_path / "tok")

    task = causal_lm_task(str(tmp_path / "tok"))
    splits = task.load_splits(0)
    x, y = splits.test.tensors
    assert torch.equal(x[:, 1:], y[:, :-1]) and 256 <= int(x.max()) < 600  # merged tokens
    assert len(splits.train) < 0.8 * len(pylm.load_splits(0).train)  # fewer tokens than bytes
    test_text = b"".join(chunks["test"]).decode("utf-8", "replace")
    assert tok.decode(x[3].tolist()) in test_text
    model = task.build_model("causal_lm", config=LLAMA).eval()
    assert tuple(model(x[:2]).shape) == (2, 128, task.describe_data(0)["vocab"])
