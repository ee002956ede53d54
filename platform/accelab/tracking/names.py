"""Every MLflow tag name accelab writes, every metric name that one module writes and
another reads, and how a deployment target's key is encoded in a metric or tag name.
Writers and readers import these; no other module spells them. Metric constants carry an
``M_`` prefix (``M_SPEEDUP`` is the metric ``speedup``, ``SPEEDUP`` the registry tag);
names built from the task's metric (``val_accuracy``) come from the helpers below.

A run's numbers for its primary (first) target carry plain names (``speedup``,
``accuracy``); every other target's carry a ``.<target key>`` suffix (``speedup.ort_b1``),
and so do per-target tags (``accelab.backend.ort_b1``).
"""

from __future__ import annotations

PREFIX = "accelab."

# what a run is, and how it is found again (``--resume``)
KIND = "accelab.kind"  # train | compress | sweep | trial
RAY_RUN = "accelab.ray_run"  # the Ray Train / Tune run name (its directory under storage_path)
RUN_BASE = "accelab.run_base"  # the config's run name (what --resume looks for)
STATUS = "accelab.status"  # a trial's outcome; "ok" once everything is recorded
ERROR = "accelab.error"  # why a run failed or was stopped
TRIAL_ID = "accelab.trial_id"
RAY_NODE = "accelab.ray_node"  # the Ray node a trial ran on
# ``accelab compress --from``: where the dense model came from
DENSE_SOURCE = "accelab.dense_source"

# where a run ran (every run)
TORCH_VERSION = "accelab.torch_version"
RAY_VERSION = "accelab.ray_version"
MLFLOW_VERSION = "accelab.mlflow_version"
PYTHON = "accelab.python"
CPU_MODEL = "accelab.cpu_model"
CPU_COUNT = "accelab.cpu_count"

# a training run (written by rank 0)
PRECISION = "accelab.precision"
PRECISION_REASON = "accelab.precision_reason"
WORLD_SIZE = "accelab.world_size"
THREADS_PER_WORKER = "accelab.threads_per_worker"
BACKEND_DEVICE = "accelab.backend_device"
RESTARTS = "accelab.restarts"  # how many times the workers were restarted after a failure
WORKER_NODES = "accelab.worker_nodes"

# a variant's measurement
BACKEND = "accelab.backend"  # the kernel its numbers ran on (per target: + suffix)
TARGET_ERROR = "accelab.target_error"  # why a target has no number (+ suffix)
SIMULATED = "accelab.simulated"
LATENCY_METHOD = "accelab.latency_method"  # how the latency was timed (per target: + suffix)
DEVICE = "accelab.device"
TARGETS = "accelab.targets"  # [[key, label, ...], ...], the primary target first
WARNING = "accelab.warning"
MODEL_SHA = "accelab.model_sha256"  # sha256 of an MLflow Model: ONNX file, torch tensors
FLOAT_FALLBACK = "accelab.float_fallback"  # quant.fallback auto: layers kept in float
TORCH_MODEL_ERROR = "accelab.torch_model_error"  # why a torch target's model is not logged

# a sweep's parent run
METRIC = "accelab.metric"
METRIC_HIGHER = "accelab.metric_higher_is_better"
METRIC_RELATIVE = "accelab.metric_relative_drop"
BASELINE_DIR = "accelab.baseline_dir"
BASELINE_KEY = "accelab.baseline_key"  # the dense model's cache key
RECOMMENDATION = "accelab.recommendation"  # (+ suffix for other targets)
RECOMMENDED_TRIAL = "accelab.recommended_trial"
RECOMMENDED_RUN = "accelab.recommended_run_id"
REGISTERED_MODEL = "accelab.registered_model"
TRIALS = "accelab.trials"

# a registered model version
TARGET = "accelab.target"
TARGET_LABEL = "accelab.target_label"
SPEEDUP = "accelab.speedup"
SPEEDUP_VALUE = "accelab.speedup_value"
QUALITY_DROP = "accelab.quality_drop"
NOISE_FLOOR = "accelab.noise_floor"
SWEEP_RUN = "accelab.sweep_run_id"
TRIAL_RUN = "accelab.trial_run_id"
ALIAS_DECISION = "accelab.alias_decision"

# metric names (a trial's or variant's numbers, the sweep's A/A control, training epochs);
# the strings are MLflow history: never change one
M_SPEEDUP = "speedup"  # over the dense model timed alongside it, on the same target
M_SPEEDUP_LO = "speedup_lo"
M_SPEEDUP_HI = "speedup_hi"
M_LATENCY_P50_MS = "latency_p50_ms"
M_LATENCY_P95_MS = "latency_p95_ms"
M_TORCH_LATENCY_P50_MS = "torch_latency_p50_ms"  # the dense model on the torch fp32 target
M_SPEEDUP_VS_TORCH = "speedup_vs_torch"
M_PACKED_SIZE_MB = "packed_size_mb"
M_SIMULATED = "simulated"  # 1.0: no real low-bit kernel, the latency is not the variant's
M_BITS = "bits"
M_SIZE_MB = "size_mb"
M_SIZE_RATIO = "size_ratio"
M_SPARSITY = "sparsity"  # zeros among the weights a variant prunes
M_N_TEST = "n_test"
M_COMPUTE_S = "compute_s"  # a variant's fine-tuning and judging time
M_NOISE_FLOOR = "noise_floor"  # the sweep's A/A control (+ suffix for other targets)
M_AA_COMPUTE_S = "aa_compute_s"
M_AA_SPEEDUP = "aa_speedup"  # the dense model timed against itself (+ _lo, _hi, suffix)
M_BASELINE_LATENCY_P50_MS = "baseline_latency_p50_ms"  # the dense model's, same target
M_SEARCH_LATENCY_MS = "search_latency_ms"  # what the Tune searcher minimizes
BASELINE_PREFIX = "baseline_"  # the dense model's numbers, on the sweep and on each trial
AA_PREFIX = "aa_"  # the A/A control's own numbers (dense judged against itself)


def on_val(metric: str) -> str:
    """The validation split's value of ``metric`` (``val_accuracy``)."""
    return f"val_{metric}"


def on_test(metric: str) -> str:
    """The test split's value of ``metric`` (``test_accuracy``), written by training."""
    return f"test_{metric}"


def drop(metric: str) -> str:
    """How far ``metric`` fell from the dense model's (``accuracy_drop``)."""
    return f"{metric}_drop"


def layer_sparsity(layer: str) -> str:
    """One prunable layer's own sparsity (``sparsity/blocks.0.mlp.fc1``): the fraction of
    its dense weights that are zero or removed."""
    return f"{M_SPARSITY}/{layer}"


def baseline(name: str) -> str:
    """The dense model's number ``name`` (``baseline_accuracy``)."""
    return BASELINE_PREFIX + name


def aa(name: str) -> str:
    """The A/A control's number ``name`` (``aa_speedup``: dense against itself)."""
    return AA_PREFIX + name


def lo(name: str) -> str:
    """The lower end of ``name``'s 95% interval (``speedup_lo``)."""
    return f"{name}_lo"


def hi(name: str) -> str:
    """The upper end of ``name``'s 95% interval (``speedup_hi``)."""
    return f"{name}_hi"


def suffix(key: str, primary: bool) -> str:
    """The name suffix of a target's numbers: none for the primary target."""
    return "" if primary else f".{key}"


def for_target(name: str, key: str | None) -> str:
    """``name`` as written for target ``key`` (None: the primary target)."""
    return name if key is None else f"{name}.{key}"


def split_target(name: str, keys: list[str]) -> tuple[str, str | None]:
    """(plain name, target key or None) of a metric or tag name written by ``for_target``."""
    for key in keys:
        if name.endswith(f".{key}"):
            return name[: -len(key) - 1], key
    return name, None
