#!/usr/bin/env bash
# The real commands on a CUDA machine, in under 5 minutes (no hand-written loops):
#
#   bash benchmarks/gpu.sh            (results under $OUT, default a fresh temp folder)
#
# 1. accelab train benchmarks/gpu.yaml: a 12.7M-parameter byte-level transformer on one
#    GPU through Ray Train, precision "auto" timed on the GPU (fp32 / bf16 / fp16).
# 2. accelab sweep benchmarks/gpu.yaml from that model, measured on the GPU
#    (measure.device=cuda, synchronised): fp32, bf16, torchao int8 and int4 weight-only,
#    each backend named; a forward pass at batch 64 and per-byte generation at batch 1.
# 3. checks that every backend ran for real (not simulated) and prints the numbers.
#
# It fails loudly, before installing anything, when torch sees no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db" ACCELAB_STORAGE_PATH="$OUT/ray"
say() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

say "GPU"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if ! python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    if python -c 'import torch' 2>/dev/null; then
        echo "gpu.sh: FAILED: torch $(python -c 'import torch; print(torch.__version__)') sees no CUDA device" >&2
        exit 1
    fi
    pip install -q torch==2.13.0   # PyPI's Linux wheel is the CUDA build
    python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
        || { echo "gpu.sh: FAILED: no CUDA device visible to torch" >&2; exit 1; }
fi
python -c 'import accelab, torchao' 2>/dev/null || pip install -q -e '.[gpu]'
python -c 'import torch, torchao; print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on", torch.cuda.get_device_name(), f"| torchao {torchao.__version__}")'

say "accelab train benchmarks/gpu.yaml"
accelab train benchmarks/gpu.yaml 2>&1 | tee "$OUT/train.log"
RUN=$(python - <<'PY'
import mlflow
runs = mlflow.search_runs(experiment_names=["gpu-check"], order_by=["start_time DESC"],
                          max_results=1, output_format="list")
print(runs[0].info.run_id)
PY
)
python - "$RUN" <<'PY'
import sys
from mlflow.tracking import MlflowClient
run = MlflowClient().get_run(sys.argv[1])
for k, v in sorted({**run.data.params, **run.data.tags}.items()):
    if "precision" in k:
        print(f"{k} = {v}")
PY

say "accelab sweep benchmarks/gpu.yaml (measured on cuda)"
accelab sweep benchmarks/gpu.yaml "sweep.baseline_from=runs:/$RUN" 2>&1 | tee "$OUT/sweep.log"

say "backends that ran"
python - <<'PY'
import sys
import mlflow
runs = mlflow.search_runs(experiment_names=["gpu-check"], output_format="list",
                          filter_string="tags.`accelab.status` = 'ok'")
seen = {}
for run in runs:
    for key, value in run.data.tags.items():
        if key.startswith("accelab.backend."):
            target = key.removeprefix("accelab.backend.")
            m = run.data.metrics
            speed = m.get("speedup" if target == "torch_b64" else f"speedup.{target}")
            seen[(run.data.params.get("compression.quant.bits"), target)] = (value, speed)
for (bits, target), (backend, speed) in sorted(seen.items()):
    print(f"bits {bits:>2}  {target:<16} {backend:<28} speedup {speed}")
wanted = {"torch-fp32", "torch-bf16", "torchao-int8-weight-only", "torchao-int4-weight-only"}
missing = wanted - {b for b, _ in seen.values()}
if missing or any("simulated" in b for b, _ in seen.values()):
    sys.exit(f"gpu.sh: FAILED: backends missing or simulated: {sorted(missing)}")
print("gpu.sh: OK")
PY
