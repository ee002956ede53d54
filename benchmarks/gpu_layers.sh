#!/usr/bin/env bash
# accelab's GPU layers without Ray or MLflow (benchmarks/gpu_layers.py) on a CUDA machine
# where benchmarks/gpu.sh cannot run (no Ray/MLflow, no network to install them):
#
#   bash benchmarks/gpu_layers.sh [--device cuda] [--steps N] [--max-seconds S]
#
# Wheels put in .whl/ first (on a machine with network, for the GPU machine's Python) are
# installed to a private folder: the layers it imports need pydantic (config schema) and
# torch-pruning (accelab.compress); torchao adds the int8/int4 weight-only backends, e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform \
#     manylinux2014_x86_64 -d .whl pydantic pydantic_core annotated-types \
#     typing-inspection typing_extensions torch-pruning torchao
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}platform:." PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
exec python3 benchmarks/gpu_layers.py "$@"
