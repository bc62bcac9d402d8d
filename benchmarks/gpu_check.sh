#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): MFU of a ~125M model in bf16 with and
# without torch.compile, FSDP2 on one device, and the cached decoding step at the 8B shape
# (eager, CUDA graph, compiled), as one table, in under 8 minutes on one H200. It writes
# runs/bench/gpu_check_cuda.json (--json PATH elsewhere); record its numbers in docs/training.md.
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run   # any machine: toy sizes on CPU, seconds
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$py" -c "import torch" 2>/dev/null; then  # was gpu_check.py's ModuleNotFoundError traceback
  echo "gpu_check.sh: error: $py cannot import torch (set PYTHON to the environment's python)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec timeout 570 "$py" benchmarks/gpu_check.py "$@"
