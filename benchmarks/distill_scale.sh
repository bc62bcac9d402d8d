#!/usr/bin/env bash
# Distillation at a scale that can generalise (issue 14), end to end, as one prepared run:
#   1. the teacher's one-token-per-step trajectories (unmask distill; cached and extendable),
#   2. the student (same command; resumable with `unmask distill --resume --out $OUT`),
#   3. teacher vs student (and the AR twin, if given) with benchmarks/decoding.py: tokens per
#      forward, tokens/s ratios, gen ppl, entropy, distinct-2, the frontier PNG.
# Sized for a GPU (minutes); on the shared 2-core CPU one 240-token trajectory of the demo
# model costs ~11 CPU-seconds with the dual cache (docs/training.md), so N=2000 is hours there.
#
#   bash benchmarks/distill_scale.sh                       # defaults below
#   N=400 STEPS=800 DEVICE=cpu bash benchmarks/distill_scale.sh
#   AR=runs/ar-fim/checkpoint bash benchmarks/distill_scale.sh
#   GEN_LENGTHS="256 512" SEGMENT=128 bash benchmarks/distill_scale.sh   # issue 14's lengths
#
# Every setting is an environment variable; the corpus is prepared from the packaged text with
# the teacher's tokenizer when $DATA does not exist yet.
set -euo pipefail

PY=${PY:-python3}
TEACHER=${TEACHER:-src/unmask/assets/demo}
DATA=${DATA:-data/bible}
OUT=${OUT:-runs/distill-scale}
N=${N:-2000}                  # trajectories
PROMPT=${PROMPT:-16}          # prompt tokens (prompt + gen = the demo's 256-token context)
GEN=${GEN:-240}               # generated tokens per trajectory
TRAJ_BATCH=${TRAJ_BATCH:-64}  # prompts the teacher decodes together
TRAJ_CACHE=${TRAJ_CACHE:-none}  # the teacher's KV cache; dual is ~4x cheaper on a CPU
TRAJ_TEMPERATURE=${TRAJ_TEMPERATURE:-}  # the teacher's temperature (unset: its default;
                              # 0 = greedy trajectories, which raised tokens/forward on the CPU)
STEPS=${STEPS:-2000}          # student training steps
BATCH=${BATCH:-32}            # student batch (rows of PROMPT + GEN tokens)
LR=${LR:-3e-4}
DEVICE=${DEVICE:-auto}
AR=${AR:-}                    # optional causal twin for the "vs AR" column
GEN_LENGTHS=${GEN_LENGTHS:-256}
SEGMENT=${SEGMENT:-}          # decode in segments of this many tokens over a sliding window,
                              # so lengths past the context (512 on the demo's 256) run whole;
                              # unset: each length is cut to the context's room after the prompt
BLOCK=${BLOCK:-32}            # semi-AR block length of every decoding row
RESULT=${RESULT:-runs/bench/distill_scale.json}  # benchmarks/results: committed, name it
FRONTIER=${FRONTIER:-docs/distill_frontier.png}
SCORE=${SCORE:-auto}          # gen ppl with SmolLM2: auto (when installed), 1, 0

if [ ! -f "$DATA/index.json" ]; then
    "$PY" -m unmask.cli prepare src/unmask/assets/web-bible.txt.gz -o "$DATA" \
        --tokenizer "$TEACHER/tokenizer.json" --val-fraction 0.02 --no-progress
fi

if [ -f "$OUT/checkpoint/model.safetensors" ] && [ -f "$OUT/train_config.json" ]; then
    "$PY" -m unmask.cli distill --resume --out "$OUT" --steps "$STEPS" --no-progress
else
    TT=()
    if [ -n "$TRAJ_TEMPERATURE" ]; then
        TT=(--traj-temperature "$TRAJ_TEMPERATURE")
    fi
    "$PY" -m unmask.cli distill "${TT[@]}" --teacher "$TEACHER" --data "$DATA" --out "$OUT" \
        --trajectories "$N" --prompt-length "$PROMPT" --gen-length "$GEN" \
        --traj-batch "$TRAJ_BATCH" --traj-cache "$TRAJ_CACHE" --steps "$STEPS" \
        --batch-size "$BATCH" --lr "$LR" --warmup 50 --save-every 250 --log-every 50 \
        --device "$DEVICE" --no-progress
fi

EXTRA=()
if [ -n "$AR" ]; then
    EXTRA+=(--ar-model "$AR")
fi
if [ -n "$SEGMENT" ]; then
    EXTRA+=(--segment-length "$SEGMENT")
fi
case "$SCORE" in
    1) EXTRA+=(--score) ;;
    0) EXTRA+=(--no-score) ;;
esac
# shellcheck disable=SC2086  # GEN_LENGTHS is a list
"$PY" benchmarks/decoding.py --model "$TEACHER" --student "$OUT" "${EXTRA[@]}" \
    --speed-preset none --gen-lengths $GEN_LENGTHS --block-length "$BLOCK" --caches none dual --device "$DEVICE" \
    --policies "llada 1/step" "llada 4/step" "llada 8/step" "threshold .9" "threshold .7" \
    "threshold .5" --frontier "$FRONTIER" --json "$RESULT"
