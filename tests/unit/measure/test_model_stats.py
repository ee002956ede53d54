"""What a model costs apart from speed, and how runners run it, on tiny untrained models
(no training, milliseconds; the mutation group ``model_stats`` runs these per mutant):
MACs of float, fake-quant and int8 layers, parameters and non-zero ones (int8 weights and
biases included), the real serialized size, the computed packed size, the input cast to
the model's dtype, and a runner's threads, eval and inference modes and generation."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from accelab.compress.quant import (
    convert_int8_dynamic,
    fake_quant_report,
    prepare_fake_quant,
)
from accelab.measure.model_stats import (
    as_model_input,
    count_macs,
    count_params,
    packed_size_bytes,
    serialized_size_bytes,
)
from accelab.measure.runners import GenerateRunner, TorchRunner, sync


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def test_macs_count_every_output_times_the_weights_fan_in():
    model = mlp()
    assert count_macs(model, torch.zeros(1, 6)) == 6 * 5 + 5 * 3
    assert isinstance(count_macs(model, torch.zeros(1, 6)), int)  # logged as a count
    assert count_macs(model, torch.zeros(4, 6)) == 4 * (6 * 5 + 5 * 3)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    assert count_macs(conv, torch.zeros(1, 2, 4, 4)) == 3 * 4 * 4 * (2 * 9) + 48 * 2
    assert count_macs(prepare_fake_quant(mlp(), 4), torch.zeros(2, 6)) == 2 * 45
    assert count_macs(convert_int8_dynamic(mlp()), torch.zeros(2, 6)) == 2 * 45


def test_counting_macs_leaves_the_model_as_it_was():
    model = mlp().train()
    count_macs(model, torch.zeros(1, 6))
    assert model.training and not model[0]._forward_hooks and not model[2]._forward_hooks
    model.eval()
    count_macs(model, torch.zeros(1, 6))
    assert not model.training


def test_counting_macs_runs_in_eval_mode():
    class Counts(nn.Module):  # one Linear in eval mode, two in training mode
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) if not self.training else self.fc(self.fc(x))

    assert count_macs(Counts().train(), torch.zeros(1, 4)) == 16


def test_params_and_nonzero_params_include_int8_weights_and_biases():
    model = mlp()
    with torch.no_grad():
        model[0].weight[:2] = 0.0  # 12 zero weights
        model[2].bias.zero_()  # 3 zero biases
    total = 6 * 5 + 5 + 5 * 3 + 3
    assert count_params(model) == (total, total - 12 - 3)
    int8 = convert_int8_dynamic(model)
    assert count_params(int8) == (total, total - 12 - 3)  # packed weights and biases counted
    no_bias = convert_int8_dynamic(nn.Sequential(nn.Linear(6, 5, bias=False)))
    assert count_params(no_bias)[0] == 30


def test_the_serialized_size_is_the_saved_files_size():
    model = mlp()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert serialized_size_bytes(model) == len(buffer.getvalue())
    bigger = nn.Sequential(nn.Linear(6, 500), nn.ReLU(), nn.Linear(500, 3))
    assert serialized_size_bytes(bigger) > serialized_size_bytes(model) + 4 * 4000


def test_the_packed_size_is_computed_only_for_fake_quant_weights():
    assert packed_size_bytes(mlp()) is None
    fq = prepare_fake_quant(mlp(), 4)
    assert packed_size_bytes(fq) == fake_quant_report(fq)["packed_size_bytes"]
    assert packed_size_bytes(fq) == (15 + 4 * 5 + 4 * 5) + (8 + 4 * 3 + 4 * 3)


def test_inputs_follow_the_models_device_and_float_dtype_only():
    half = mlp().to(torch.bfloat16)
    assert as_model_input(half, torch.zeros(2, 6)).dtype == torch.bfloat16
    tokens = torch.zeros(2, 6, dtype=torch.long)
    assert as_model_input(half, tokens).dtype == torch.long  # token ids stay integers
    x = torch.zeros(2, 6)
    assert as_model_input(mlp(), x) is x  # float32 already
    assert as_model_input(nn.ReLU(), tokens) is tokens  # no parameters: as given
    ints = nn.Embedding(4, 2).to(torch.float64)
    assert as_model_input(ints, tokens).dtype == torch.long


class Probe(nn.Module):
    """Records, per call, the threads, grad and inference mode it ran under."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.seen: list[tuple[int, bool, bool, bool]] = []

    def forward(self, x):
        self.seen.append((torch.get_num_threads(), torch.is_grad_enabled(),
                          torch.is_inference_mode_enabled(), self.training))  # fmt: skip
        return self.fc(x)


def test_a_torch_runner_runs_in_eval_and_inference_mode_on_its_threads_then_restores():
    before = torch.get_num_threads()
    threads = 2 if before != 2 else 3
    probe = Probe().train()
    runner = TorchRunner(probe, threads=threads)
    assert not probe.training and runner.model is probe
    assert (runner.backend, runner.device, runner.simulated) == ("torch-fp32", "cpu", False)
    with runner.active():
        runner(torch.zeros(1, 3))
    assert probe.seen == [(threads, False, True, False)]
    assert torch.get_num_threads() == before and not torch.is_inference_mode_enabled()
    with pytest.raises(RuntimeError), runner.active():
        raise RuntimeError("a failing call")
    assert torch.get_num_threads() == before
    runner(torch.zeros(1, 3, dtype=torch.float64))  # cast to the model's dtype
    sync("cpu")  # nothing to wait for


class NextToken(nn.Module):
    """Logits that make the next token (last token + 1) % 5; records each context."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.contexts: list[list[int]] = []

    def forward(self, x):
        self.contexts.append(x[0].tolist())
        return nn.functional.one_hot((x + 1) % 5, 5).float() + self.p


def test_generation_slides_the_context_one_greedy_token_at_a_time_at_batch_one():
    model = NextToken()
    inner = TorchRunner(model, backend="ort-fp32", threads=1, simulated=True)
    gen = GenerateRunner(inner, tokens=3)
    assert (gen.backend, gen.device, gen.threads, gen.simulated) == ("ort-fp32", "cpu", 1, True)
    x = torch.tensor([[0, 1, 2], [4, 4, 4]])
    with gen.active():
        logits = gen(x)
    assert model.contexts == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]  # batch 1: the first row
    assert logits.shape == (1, 5) and int(logits.argmax()) == 0  # after 4 comes 0
