#!/usr/bin/env bash
# Set up unmask in a virtual environment: bash install.sh [--test]
#
# - Installs unmask (editable) with its `serve` extra (FastAPI, uvicorn), so `unmask serve`
#   works after this one command.
# - Uses the active virtualenv/conda environment if there is one, else creates ./.venv.
# - Keeps a PyTorch already installed (a CUDA build, say; one older than 2.1 is refused,
#   with how to upgrade it); otherwise installs torch==2.13.0 as pip finds it (plain PyPI
#   on Linux: the CUDA build; for the CPU one, first: pip install torch==2.13.0
#   --index-url https://download.pytorch.org/whl/cpu).
# - --test also installs the test tools (pytest, ruff, playwright), the libraries some tests
#   load (pyproject.toml's `test` extra: transformers, lm-eval, ...) and, as root with
#   apt-get, the Debian `chromium` package that the browser test drives (never `playwright
#   install`, which downloads a browser from outside PyPI and Debian).
# `sh install.sh` (dash on Debian/Ubuntu) stopped at "set: Illegal option -o pipefail"
[ -n "${BASH_VERSION:-}" ] || { echo "install.sh: run it with bash: bash install.sh" >&2; exit 2; }
set -euo pipefail
usage="usage: bash install.sh [--test]"
case "$#:${1:-}" in  # anything else was taken for a plain install (--tests, --help too)
  0:) extras="[serve]" ;;
  1:--test) extras="[serve,test]" ;;
  1:-h|1:--help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "install.sh: unexpected arguments: $* ($usage)" >&2; exit 2 ;;
esac
start=$PWD
cd "$(dirname "$0")"
fail() { echo "install.sh: $*" >&2; exit 1; }
new_enough() {  # unmask needs Python >= 3.10 (pyproject.toml); pip's refusal named no fix
  command -v "$1" >/dev/null || fail "no $1 on PATH: install Python 3.10 or newer first"
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    fail "unmask needs Python 3.10 or newer; $1 is $("$1" -V 2>&1)${2:-}"
}
if [[ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]]; then
  py=python
  run=unmask
  new_enough "$py"
else
  if [[ ! -x .venv/bin/python ]]; then
    # a .venv whose Python was removed or upgraded away (pyenv, Homebrew, a distribution
    # upgrade): venv failed on it, and the .venv was deleted with the python3-venv advice
    [[ ! -L .venv/bin/python ]] || fail ".venv/bin/python is a link to $(readlink -m \
      .venv/bin/python 2>/dev/null || readlink .venv/bin/python), which is gone (the Python" \
      "that made .venv was removed or upgraded): remove .venv and run again"
    new_enough python3
    # a failed venv (Debian/Ubuntu without python3-venv: no ensurepip) left .venv/bin/python
    # without pip, so every later run skipped this step and failed at "No module named pip"
    python3 -m venv .venv || { rm -rf .venv; fail "python3 -m venv failed (on Debian or" \
      "Ubuntu: apt install python3-venv, or activate a virtualenv), then run install.sh again"; }
  fi
  py=.venv/bin/python
  run=.venv/bin/unmask
  # run from another folder (`bash unmask/install.sh` after a clone): .venv/bin/unmask was
  # "No such file or directory" there; the path from anywhere, quoted for the shell
  [[ "$PWD" -ef "$start" ]] || printf -v run %q "$PWD/$run"
  "$py" -m pip --version >/dev/null 2>&1 ||
    fail ".venv has no pip (made by a python3 -m venv that failed): remove .venv and run again"
  # a .venv an older python3 made is kept by every run: pip refused unmask deep in its output
  new_enough "$py" " (.venv was made by an older Python: remove .venv and run again)"
fi
pipq() { "$py" -m pip install -q "$@" 2> >(grep -v "is ignored" >&2); }
pipq --upgrade pip
if ! "$py" -c "import torch" 2>/dev/null; then
  pipq "torch==${UNMASK_TORCH_VERSION:-2.13.0}"
elif ! "$py" -c 'import re, sys, torch
sys.exit(tuple(map(int, re.match(r"(\d+)\.(\d+)", torch.__version__).groups())) < (2, 1))'; then
  # unmask needs torch>=2.1 (pyproject.toml): pip replaced an older one, a CUDA build say,
  # with whatever build it found, silently (on Linux, PyPI's multi-GB CUDA one). The advice
  # names the index of the installed build (+cpu, +cu118, +rocm5.6), never another one.
  tv=$("$py" -c 'import torch; print(torch.__version__)')
  index="pip install 'torch>=2.1' --index-url https://download.pytorch.org/whl/${tv##*+}"
  case "$tv" in
    *+cpu) how="$index" ;;
    *+cu[0-9]*|*+rocm[0-9]*) how="$index; where that index has no torch 2.1, the index of a"
      how+=" newer CUDA or ROCm that your driver runs: https://pytorch.org/get-started/locally" ;;
    *) how="pip install 'torch>=2.1', with the --index-url it was installed from, if any:"
      how+=" https://pytorch.org/get-started/locally" ;;
  esac
  fail "torch $tv is older than unmask needs (2.1): upgrade it first ($how), then run again"
fi
pipq -e ".${extras}"
if [[ "$extras" == *test* ]] && ! command -v chromium >/dev/null; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } ||
      echo "note: apt-get could not install chromium; tests/test_playground.py will be skipped"
  else
    echo "note: no chromium and no root apt-get to install it; tests/test_playground.py will be skipped"
  fi
fi
"$py" -c "import torch, unmask; print(f'unmask {unmask.__version__} ready (torch {torch.__version__}, python: $py)')"
echo "next: $run demo"
