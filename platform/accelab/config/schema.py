"""Typed experiment config. One YAML file validates into one ``ExperimentConfig``.

Every section forbids unknown keys; field descriptions double as documentation
(``accelab validate --explain`` is not needed: read this file or ``configs/``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class TrainableConfig(Section):
    name: str = Field("digits", description="Registry name or import path 'pkg.module:attr'.")
    model: str = Field("cnn", description="Model name the task builds (digits: cnn, mlp).")
    model_args: dict[str, Any] = Field(default_factory=dict, description="Kwargs for the builder.")
    data_seed: int = Field(0, description="Seed of the train/val/test split.")


class TrainConfig(Section):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = Field(64, description="Per-worker batch size.")
    lr: PositiveFloat = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 on CUDA with bf16 / CPUs with AMX or avx512_bf16, else fp32.",
    )
    seed: int = 0


class ScalingSection(Section):
    num_workers: PositiveInt = Field(2, description="DDP workers (Ray Train).")
    use_gpu: bool = False
    cpus_per_worker: PositiveFloat = 1.0
    gpus_per_worker: Annotated[float, Field(ge=0)] = 1.0
    threads_per_worker: PositiveInt | Literal["auto"] = Field(
        "auto", description="torch intra-op threads per worker; auto = cpus_per_worker."
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    autoscaling: bool = Field(
        False, description="Cluster can grow: skip the 'can never fit' resource check."
    )


class RunSection(Section):
    name: str | None = Field(None, description="Ray Train run name; default: experiment name.")
    storage_path: str = Field(
        "./accelab_results",
        description="Checkpoints and Ray results (shared storage on a cluster).",
    )
    max_failures: Annotated[int, Field(ge=-1)] = Field(
        1, description="Worker-group restarts; -1 = forever."
    )
    checkpoints_to_keep: PositiveInt = 2


class TrackingConfig(Section):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///mlflow.db.")
    experiment: str | None = Field(None, description="MLflow experiment; default: experiment name.")


class FaultsConfig(Section):
    """Fault injection, for testing recovery (chaos testing). Off by default."""

    fail_at_epoch: PositiveInt | None = Field(
        None, description="Raise once at the start of this epoch (>= 1, after a checkpoint exists)."
    )
    fail_rank: NonNegInt = 0
    inf_grad_at_step: NonNegInt | None = Field(
        None, description="Set one gradient to inf at this optimizer step (tests fp16 skipping)."
    )


class PruneConfig(Section):
    method: Literal["none", "unstructured", "structured"] = "none"
    sparsity: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="Fraction of weights (unstructured) or channels (structured) removed."
    )
    scope: Literal["global", "layer"] = "global"
    exclude: list[str] = Field(default_factory=list, description="Layers kept dense, by name.")
    schedule: Literal["oneshot", "cubic"] = Field(
        "oneshot", description="cubic: Zhu & Gupta gradual pruning during fine-tuning."
    )


class QuantConfig(Section):
    bits: Literal[2, 3, 4, 5, 6, 7, 8, 32] = Field(32, description="32 = no quantization.")
    mode: Literal["ptq", "qat"] = Field("ptq", description="qat needs finetune.epochs > 0.")
    activations: bool = False
    calibration_batches: PositiveInt = 8
    real_kernel: bool = Field(
        True, description="Run on a real low-bit kernel where one exists (int8-x86 on CPU)."
    )


class CompressionConfig(Section):
    prune: PruneConfig = Field(default_factory=PruneConfig)
    quant: QuantConfig = Field(default_factory=QuantConfig)


class FinetuneConfig(Section):
    epochs: NonNegInt = 0
    lr: PositiveFloat | None = Field(None, description="Default: train.lr / 10.")


class MeasureConfig(Section):
    batch_size: PositiveInt = 64
    threads: PositiveInt = Field(1, description="torch intra-op threads while measuring latency.")
    warmup: PositiveInt = Field(10, description="Untimed runs before timing (real kernels warm).")
    repeats: PositiveInt = 50
    rounds: PositiveInt = Field(
        3, description="Alternating baseline/variant rounds; medians over rounds are reported."
    )


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
    max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] = Field(
        0.01, description="Fraction: 0.01 = one point of test accuracy."
    )
    max_latency_ms: PositiveFloat | None = None
    max_size_mb: PositiveFloat | None = None


class SweepConfig(Section):
    search: Literal["grid", "random", "optuna"] = "grid"
    num_samples: PositiveInt = Field(1, description="grid: repeats of the grid; else trials.")
    max_concurrent_trials: PositiveInt = 1
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
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    sweep: SweepConfig | None = None

    @property
    def run_name(self) -> str:
        return self.run.name or self.name

    @property
    def mlflow_experiment(self) -> str:
        return self.tracking.experiment or self.name
