"""Typed experiment config. One YAML file validates into one ``ExperimentConfig``.

Every section forbids unknown keys; field descriptions double as documentation
(``accelab validate --explain`` is not needed: read this file or ``configs/``).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

PositiveInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
# Upper bounds where a typo (1e9 epochs, 10000 workers) would otherwise run for days.
Epochs = Annotated[int, Field(ge=1, le=10_000)]
BatchSize = Annotated[int, Field(ge=1, le=65_536)]
Count = Annotated[int, Field(ge=1, le=100_000)]
LearningRate = Annotated[float, Field(gt=0, le=10)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class TrainableConfig(Section):
    name: str = Field("digits", description="Registry name or import path 'pkg.module:attr'.")
    model: str = Field("cnn", description="Model name the task builds (digits: cnn, mlp).")
    model_args: dict[str, Any] = Field(default_factory=dict, description="Kwargs for the builder.")
    data_seed: int = Field(0, description="Seed of the train/val/test split.")


class TrainConfig(Section):
    epochs: Epochs = 10
    batch_size: BatchSize = Field(64, description="Per-worker batch size.")
    lr: LearningRate = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: time a few training steps of this model on this device in each "
        "precision and keep the fastest that trains stably (cached per model and device).",
    )
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="Learning-rate schedule over all training steps."
    )
    seed: int = 0


class ScalingSection(Section):
    num_workers: Annotated[int, Field(ge=1, le=4096)] = Field(
        2, description="DDP workers (Ray Train)."
    )
    use_gpu: bool = False
    cpus_per_worker: Annotated[float, Field(gt=0, le=1024)] = 1.0
    gpus_per_worker: Annotated[float, Field(ge=0, le=64)] = 1.0
    threads_per_worker: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = Field(
        "auto", description="torch intra-op threads per worker; auto = cpus_per_worker."
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    autoscaling: bool = Field(
        False, description="Cluster can grow: skip the 'can never fit' resource check."
    )


def default_storage_path() -> str:
    return os.environ.get("ACCELAB_STORAGE_PATH") or "./accelab_results"


class RunSection(Section):
    name: str | None = Field(None, description="Ray Train run name; default: experiment name.")
    storage_path: str = Field(
        default_factory=default_storage_path,
        description="Checkpoints and Ray results: a URI every node can reach on a cluster "
        "(s3://, gs://, or a shared mount). Default: $ACCELAB_STORAGE_PATH, else ./accelab_results.",
    )
    max_failures: Annotated[int, Field(ge=-1, le=1000)] = Field(
        1, description="Worker-group restarts; -1 = forever."
    )
    checkpoints_to_keep: Annotated[int, Field(ge=1, le=1000)] = 2


class TrackingConfig(Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
        "in the working directory. On a multi-node cluster: the head's MLflow server.",
    )
    experiment: str | None = Field(None, description="MLflow experiment; default: experiment name.")


class ClusterSection(Section):
    """Where Ray runs: a local Ray (default) or an existing cluster."""

    address: str | None = Field(
        None,
        description="Ray cluster to join (auto, host:port, ray://...); default $RAY_ADDRESS, "
        "else start a local Ray.",
    )
    node_types_file: str | None = Field(
        None,
        description="Autoscaler config listing the node types the cluster can add (default: "
        "~/ray_bootstrap_config.yaml when present, as on a `ray up` head node).",
    )
    dashboard: bool = Field(
        False,
        description="Start Ray's dashboard with a local Ray (off: ~3 s faster start-up; a "
        "cluster started with `ray start` / `ray up` has its own).",
    )
    shared_paths: list[str] = Field(
        default_factory=list,
        description="Local folders every node mounts (NFS): a run.storage_path under one is "
        "accepted on a multi-node cluster.",
    )


class RegistrySection(Section):
    """The MLflow Model Registry: where a sweep's recommendation is registered."""

    enabled: bool = Field(True, description="Register each sweep's recommended model.")
    model_name: str | None = Field(None, description="Registered model; default: experiment.")
    alias: str | None = Field(
        None,
        description="Alias moved to a new winner only when it is measurably faster; default "
        "fastest-within-<max_accuracy_drop in points>pt.",
    )
    target: str | None = Field(
        None,
        description="The measure target (key, e.g. ov_b16, ort_b64, torch_b64) whose "
        "recommendation is registered; default: the first ONNX Runtime target, else the first.",
    )


class FaultsConfig(Section):
    """Fault injection, for testing recovery (chaos testing). Off by default."""

    fail_at_epoch: PositiveInt | None = Field(
        None, description="Raise once at the start of this epoch (>= 1, after a checkpoint exists)."
    )
    fail_rank: NonNegInt = 0
    step_delay_s: Annotated[float, Field(ge=0, le=60)] = Field(
        0.0, description="Sleep after every optimizer step: slows epochs down for chaos tests."
    )
    inf_grad_at_step: NonNegInt | None = Field(
        None, description="Set one gradient to inf at this optimizer step (tests fp16 skipping)."
    )


class PruneConfig(Section):
    method: Literal["none", "unstructured", "structured", "heads"] = Field(
        "none",
        description="heads: remove whole attention heads (q/k/v/o shrink) from every attention "
        "layer, the lowest ||O_h||*||V_h|| first (transformers: pylm, Hugging Face GPT-2/Llama).",
    )
    sparsity: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0,
        description="Fraction of weights (unstructured), channels (structured) or heads per "
        "attention layer (heads: round(sparsity * heads) go) removed.",
    )
    scope: Literal["global", "layer"] = "global"
    exclude: list[str] = Field(default_factory=list, description="Layers kept dense, by name.")
    schedule: Literal["oneshot", "cubic"] = Field(
        "oneshot", description="cubic: Zhu & Gupta gradual pruning during fine-tuning."
    )
    ramp_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5,
        description="cubic: the schedule reaches the target sparsity after this fraction of "
        "the fine-tuning steps; the rest are recovery at the final sparsity.",
    )
    prune_output_layer: bool = Field(
        False,
        description="unstructured: also prune the output layer (structured pruning never "
        "removes its outputs). Off: its few weights matter most per weight.",
    )
    layers: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=dict,
        description="Per-layer sparsity (unstructured and structured): layer name or fnmatch "
        "pattern -> sparsity, each such layer ranked inside itself; 0 keeps it dense. An exact "
        "name wins, else the first matching pattern, else `sparsity` (and `scope`). A sweep "
        "searches it as a whole: `choice`/`grid` of mappings.",
    )


class QuantConfig(Section):
    bits: Literal[2, 3, 4, 5, 6, 7, 8, 16, 32] = Field(
        32,
        description="32 = no quantization; 16 = bf16 weights and compute (torch: CUDA, CPUs "
        "with AMX/avx512_bf16); 8 = int8 kernels; 4 = int4 weight-only on ONNX Runtime "
        "(MatMulNBits), OpenVINO (NNCF int4 weight compression) and CUDA (torchao), simulated on "
        "torch CPU; 2-7 otherwise simulated.",
    )
    block_size: Annotated[int, Field(ge=16, le=4096)] = Field(
        32,
        description="bits 4 on ONNX Runtime and OpenVINO (NNCF's group_size): weights per scale "
        "and zero point along the input channels (a power of two >= 16); smaller = more "
        "accurate and larger. OpenVINO needs it to divide every layer's input channels.",
    )
    mode: Literal["ptq", "qat"] = Field("ptq", description="qat needs finetune.epochs > 0.")
    activations: bool = False
    scheme: Literal["dynamic", "static"] = Field(
        "dynamic",
        description="8-bit kernels: dynamic (activations quantized per batch at run time; "
        "torch: Linear only) or static (activations calibrated on training data; torch FX "
        "and ONNX Runtime QDQ, Conv and Linear).",
    )
    calibration_batches: Annotated[int, Field(ge=1, le=10_000)] = Field(
        8, description="Training-split batches for activation ranges / static quantization."
    )
    per_channel: bool = Field(
        True,
        description="ONNX Runtime int8: per-channel weight scales; false = per-tensor (ORT's "
        "own default, often faster at batch 1). Searchable like any knob.",
    )
    activation_type: Literal["uint8", "int8"] = Field(
        "uint8", description="ONNX Runtime static int8: activation type (ORT's default: int8)."
    )
    symmetric_activations: bool = Field(
        False, description="ONNX Runtime static int8: symmetric activation ranges."
    )
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="ONNX Runtime static int8: how activation ranges are calibrated."
    )
    op_types: list[str] | None = Field(
        None,
        description="ONNX Runtime int8: op types to quantize, e.g. [MatMul, Gemm] (leaves "
        "attention Softmax etc. in float); default: every op type ORT quantizes.",
    )
    real_kernel: bool = Field(
        True,
        description="Run on a real low-bit kernel where one exists (torch-int8-x86 on CPU); "
        "false simulates 2-8 bits in fp32. bf16 (bits 16) always runs real bf16 kernels.",
    )
    layers: dict[str, Annotated[int, Field(ge=2, le=8)] | None] = Field(
        default_factory=dict,
        description="Per-layer recipe: layer name or fnmatch pattern -> bits, or float (null) "
        "to keep the layer unquantized (torch: left in float; ONNX Runtime: nodes_to_exclude; "
        "OpenVINO: NNCF's ignored_scope). "
        "An exact name wins, else the first matching pattern, else bits. Bits other than "
        "`bits` are simulated (real_kernel: false).",
    )
    fallback: Literal["none", "auto"] = Field(
        "none",
        description="auto: rank the layers by their validation quality drop when only they are "
        "quantized, then keep the fewest most sensitive ones in float (bisection) until the "
        "whole model's validation drop is within fallback_budget. Like `layers`, nothing "
        "to do at bits 16/32.",
    )
    fallback_budget: Annotated[float, Field(gt=0, le=10)] | None = Field(
        None,
        description="fallback auto: validation quality drop to reach, in the task metric's "
        "terms; default: sweep.constraints' quality drop (0.01 without a sweep section).",
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _float_word(cls, value: Any) -> Any:
        """``float`` reads better in YAML than ``null``; both keep a layer in float."""
        if isinstance(value, dict):
            return {k: None if v == "float" else v for k, v in value.items()}
        return value

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"must be a power of two >= 16 (16, 32, 64, 128, ...), got {value}")
        return value

    @property
    def ort_recipe(self) -> dict[str, Any]:
        """The ONNX Runtime quantization knobs (``accelab.export.onnx.OrtRecipe`` fields)."""
        return {
            "per_channel": self.per_channel, "activation_type": self.activation_type,
            "symmetric_activations": self.symmetric_activations,
            "calibration_method": self.calibration_method,
            "op_types": tuple(self.op_types) if self.op_types is not None else None,
            "layers": tuple(self.layers.items()),
        }  # fmt: skip

    @property
    def label(self) -> str:
        """``bf16`` or ``int<bits>`` (names and descriptions of variants)."""
        return "bf16" if self.bits == 16 else f"int{self.bits}"


class CompressionConfig(Section):
    prune: PruneConfig = Field(default_factory=PruneConfig)
    quant: QuantConfig = Field(default_factory=QuantConfig)


class DistillConfig(Section):
    """Knowledge distillation from the dense model during recovery fine-tuning: loss =
    (1 - weight) * task loss + weight * T^2 * KL(softmax(teacher/T) || softmax(student/T))."""

    weight: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="Share of the distillation term; 0 = off (plain task loss)."
    )
    temperature: Annotated[float, Field(gt=0, le=100)] = Field(
        2.0, description="Softens both distributions; the KL term is scaled by its square."
    )


class FinetuneConfig(Section):
    epochs: Annotated[int, Field(ge=0, le=10_000)] = 0
    lr: LearningRate = Field(
        2e-3, description="Peak fine-tuning learning rate (see schedule); measured on digits."
    )
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="cosine: decays to zero over the fine-tune (recovers best)."
    )
    distill: DistillConfig = Field(
        default_factory=DistillConfig,
        description="The dense model as teacher while fine-tuning (weight 0 = off).",
    )


class Target(Section):
    """A deployment target: the runtime a model ships on and the batch it serves."""

    runtime: Literal["torch", "onnxruntime", "openvino"] = Field(
        "torch",
        description="openvino: CPU plugin (needs the [openvino] extra); bits 32 = f32 hint, "
        "16 = default hint (bf16 on CPUs with bf16), 8 = NNCF post-training int8.",
    )
    batch_size: BatchSize | None = Field(None, description="Default: measure.batch_size.")
    mode: Literal["forward", "generate"] = Field(
        "forward",
        description="forward: one pass over a batch; generate (language models): greedy "
        "generation at batch 1, latency per new token (full context each step, no KV cache).",
    )
    tokens: Annotated[int, Field(ge=1, le=4096)] = Field(
        16, description="generate: tokens generated per timed run."
    )


def target_key(runtime: str, batch_size: int, mode: str = "forward") -> str:
    """A target's short name in metrics, tags and ``registry.target``: torch_b64, ort_b1,
    ov_b16, ort_gen (generation)."""
    short = {"onnxruntime": "ort", "openvino": "ov"}.get(runtime, "torch")
    return f"{short}_gen" if mode == "generate" else f"{short}_b{batch_size}"


def default_targets() -> list[Target]:
    return [Target(runtime="torch"), Target(runtime="onnxruntime"),
            Target(runtime="onnxruntime", batch_size=1)]  # fmt: skip


class MeasureConfig(Section):
    batch_size: BatchSize = 64
    targets: list[Target] = Field(
        default_factory=default_targets,
        min_length=1,
        description="Where latency is measured (each variant on each target, against the "
        "dense model on the same runtime and on torch); the first is the primary one that "
        "the table, the plot and `speedup` report. Default: torch and ONNX Runtime at "
        "batch_size, and ONNX Runtime at batch 1.",
    )
    device: Literal["cpu", "cuda"] = Field(
        "cpu",
        description="Where latency is measured. cuda: torch targets only, synchronised "
        "timing; int8/int4 through torchao (weight-only int4, dynamic int8).",
    )
    onnx_exporter: Literal["dynamo", "torchscript"] = Field(
        "dynamo", description="torch.onnx exporter for ONNX Runtime targets."
    )
    threads: Annotated[int, Field(ge=1, le=1024)] = Field(
        1, description="Intra-op threads while measuring latency."
    )
    warmup: Count = Field(10, description="Untimed runs before timing (real kernels warm).")
    method: Literal["blocks", "rounds"] = Field(
        "blocks",
        description="blocks: baseline and variant interleaved in short blocks (order "
        "rotated), the speedup is the median of the per-block ratios with an order-statistic "
        "95% interval, sampled until target_precision or max_seconds; rounds (the old "
        "method): `rounds` alternating rounds of `repeats` runs, min-max of the round ratios.",
    )
    block_calls: Annotated[int, Field(ge=1, le=1000)] = Field(
        5,
        description="blocks: timed runs of each model per block, interleaved call by call "
        "(the block's fastest counts).",
    )
    min_blocks: Annotated[int, Field(ge=1, le=100000)] = Field(
        20, description="blocks: blocks timed before the stopping rule is checked."
    )
    target_precision: Annotated[float, Field(gt=0, le=1)] = Field(
        0.01,
        description="blocks: stop once every speedup's 95% interval has at most this "
        "relative half-width (0.01 = +-1%).",
    )
    max_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        5.0,
        description="blocks: time budget of one measurement (the interval is reported "
        "as wide as it is when the budget runs out).",
    )
    block_ms: Annotated[float, Field(ge=0, le=60000)] = Field(
        30.0,
        description="blocks: fewer calls per block (down to 1) when block_calls rounds of "
        "every runner's call (its fastest warm-up time) would take longer than this many ms, "
        "so that a slow model gets more paired blocks within max_seconds; 0 = always "
        "block_calls. The calls per block used are in the latency's method.",
    )
    realtime: bool = Field(
        True,
        description="blocks: time at real-time priority (SCHED_FIFO 1 for the timing thread, "
        "restored afterwards) where the OS allows it (Linux as root, with CAP_SYS_NICE or an "
        "RLIMIT_RTPRIO), so that other CPU-bound work cannot preempt a timed call; only when "
        "every timed runner runs 1 thread on the CPU. Refused or not applicable: normal "
        "priority, and the latency's method says so.",
    )
    primed: bool = Field(
        True,
        description="blocks: each timed run right after an untimed run of the same model "
        "(twice the calls), so that no model is timed right after another one: at batch 1 "
        "an ONNX Runtime session timed right after torch read up to 14% slower than one timed "
        "after another session, an A/A bias that rotating the order cannot remove.",
    )
    pin_cpu: bool = Field(
        False,
        description="Pin the measuring process to one CPU while timing (os.sched_setaffinity, "
        "where the OS has it; restored afterwards).",
    )
    repeats: Count = Field(50, description="rounds: timed runs per round.")
    rounds: Annotated[int, Field(ge=1, le=1000)] = Field(
        5,
        description="rounds: alternating baseline/variant rounds: the speedup is the median "
        "of the per-round ratios, shown with their min-max.",
    )

    def batch_of(self, t: Target) -> int:
        """The batch ``t`` is measured at: 1 for generation, else its own or the default."""
        return 1 if t.mode == "generate" else t.batch_size or self.batch_size

    def target_keys(self) -> list[str]:
        """The keys of ``targets`` (torch_b64, ort_b1, ov_b16, ort_gen), in order."""
        return [target_key(t.runtime, self.batch_of(t), t.mode) for t in self.targets]


class Distribution(Section):
    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[PositiveFloat, PositiveFloat] | None = None
    randint: tuple[int, int] | None = Field(None, description="[low, high) like Tune.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [k for k, v in self.__dict__.items() if v is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of grid/choice/uniform/loguniform/randint, got {given}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k, v in self.__dict__.items() if v is not None)


class Constraints(Section):
    """What a recommendation must meet, judged on the validation split."""

    max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] = Field(
        0.01, description="Fraction: 0.01 = one point of validation accuracy."
    )
    max_quality_drop: Annotated[float, Field(ge=0, le=10)] | None = Field(
        None,
        description="The same for any task metric, in its own terms: metric units for "
        "accuracy, relative for perplexity (0.02 = at most 2% higher). Overrides "
        "max_accuracy_drop when set.",
    )
    max_latency_ms: PositiveFloat | None = None
    max_size_mb: PositiveFloat | None = None

    @property
    def quality_drop(self) -> float:
        return self.max_accuracy_drop if self.max_quality_drop is None else self.max_quality_drop


class SweepConfig(Section):
    search: Literal["grid", "random", "optuna"] = "grid"
    num_samples: Count = Field(1, description="grid: repeats of the grid; else trials.")
    max_concurrent_trials: Annotated[int, Field(ge=1, le=1024)] = 1
    scheduler: Literal["none", "asha"] = "none"
    space: dict[str, Distribution] = Field(default_factory=dict)
    variants: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Hand-picked recipes, each {dotted.key: value, ...}: one more grid dimension.",
    )
    constraints: Constraints = Field(default_factory=Constraints)
    baseline_from: str | None = Field(
        None,
        description="Dense baseline checkpoint dir or MLflow run (runs:/<id>); default: train one.",
    )


class ExperimentConfig(Section):
    name: str = Field("accelab", min_length=1, description="Experiment name (MLflow, Ray run).")
    trainable: TrainableConfig = Field(default_factory=TrainableConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    run: RunSection = Field(default_factory=RunSection)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)
    cluster: ClusterSection = Field(default_factory=ClusterSection)
    registry: RegistrySection = Field(default_factory=RegistrySection)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    sweep: SweepConfig | None = None
    _sources: Any = PrivateAttr(default=None)  # where each key came from (set by load_config)

    def labelled(self, key: str) -> str:
        """``key`` prefixed with where its value came from (the file or an override), so
        that an error found after loading still names it."""
        source = self._sources.of(key) if self._sources is not None else None
        return f"{source}: {key}" if source else key

    @property
    def run_name(self) -> str:
        return self.run.name or self.name

    @property
    def mlflow_experiment(self) -> str:
        return self.tracking.experiment or self.name
