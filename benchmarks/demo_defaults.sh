#!/usr/bin/env bash
# The demo model's sampling default measured by benchmarks/defaults.py on the three columns of
# docs/sampling.md "Long outputs" (64 prompts of 12 and of 2 words, 64 tokens; 32 prompts of
# 12 words, 232 tokens), one thread, argmax in blocks of 4, so deterministic. One set a call,
# as the session that made it ran it (src/unmask/assets/demo/TRAINING.md cites each):
#   val22   penalty 1.3 and 1.35 x 3- and 4-gram ban, prompts from data/bible's validation
#           split, long column 224 tokens (232 did not fit a 25-token prompt): session 22
#   pen21   penalty 1.3 .. 1.5 with the 4-gram ban, corpus-tail prompts: session 21
#   ng3_21  penalty 1.3 with the 3-gram ban, corpus-tail prompts: session 21
# Writes $OUT/<set>_demo_w12_g64.json, _w2_g64, _w12_g<long>, the names of the committed files
# in benchmarks/results (OUT default runs/bench: pass OUT=benchmarks/results to replace them);
# flags after the set go to every run and win (e.g. --prompts 2 --no-score for a quick check).
# Needs data/bible (unmask prepare; docs/data.md) and, for gen ppl, the SmolLM2 scorer.
#
#   bash benchmarks/demo_defaults.sh val22
#   OUT=/tmp/check bash benchmarks/demo_defaults.sh pen21 --prompts 2 --no-score
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
OUT=${OUT:-runs/bench}
SET=${1:-}
[ $# -gt 0 ] && shift
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

long=232
case $SET in
  val22) grid=(--repetition-penalties 1.3 1.35 --no-repeat-ngram-sizes 3 4 --prompt-source val)
         long=224 ;;
  pen21) grid=(--repetition-penalties 1.3 1.35 1.4 1.5 --no-repeat-ngram-sizes 4
               --prompt-source corpus-tail) ;;
  ng3_21) grid=(--repetition-penalties 1.3 --no-repeat-ngram-sizes 3
                --prompt-source corpus-tail) ;;
  *) echo "usage: bash benchmarks/demo_defaults.sh val22|pen21|ng3_21 [defaults.py flags]" >&2
     exit 2 ;;
esac
mkdir -p "$OUT"

run() {  # prompts, words, tokens
  "$PY" benchmarks/defaults.py --temperatures 0 --blocks 4 --threads 1 "${grid[@]}" \
    --prompts "$1" --prompt-words "$2" --gen-length "$3" "${extra[@]}" \
    --json "$OUT/${SET}_demo_w$2_g$3.json"
}
extra=("$@")
run 64 12 64
run 64 2 64
run 32 12 "$long"
