#!/usr/bin/env bash
# Set up unmask in a virtual environment: bash install.sh [--test]
#
# - Uses the active virtualenv/conda environment if there is one, else creates ./.venv.
# - Keeps a PyTorch that is already installed (a CUDA build, say); otherwise installs
#   torch==2.13.0, the CPU build that pip finds on this kind of machine, instead of
#   letting a plain `torch` requirement pull a multi-GB CUDA build.
# - --test also installs the test tools (pytest, ruff).
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"
if [[ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]]; then
  py=python
else
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  py=.venv/bin/python
fi
pipq() { "$py" -m pip install -q "$@" 2> >(grep -v "is ignored" >&2); }
pipq --upgrade pip
if ! "$py" -c "import torch" 2>/dev/null; then
  pipq "torch==${UNMASK_TORCH_VERSION:-2.13.0}"
fi
pipq -e ".${extras}"
"$py" -c "import torch, unmask; print(f'unmask {unmask.__version__} ready (torch {torch.__version__}, python: $py)')"
