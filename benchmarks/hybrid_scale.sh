#!/usr/bin/env bash
# The one-model hybrid of the demo (issue 13), end to end, as one prepared run:
#   1. train it from the AR twin (`--objective hybrid --init $INIT`; resumable: a second call
#      continues the run in $OUT with `unmask train --resume`),
#   2. store a float16 copy in $SHIP (what a device machine can send back: 16 MiB a file;
#      a resumed call replaces it with the new weights),
#   3. measure it against AR, the plain diffusion model and two-model speculative decoding
#      with benchmarks/speculative.py (MEASURE=1; gen ppl when the offline scorer is there).
# On this 2-core CPU step 1 takes 6-16 h (docs/training.md, "The long run from the AR twin");
# a GPU does it in minutes. Train on a device and measure here, where the goals are set:
#
#   # here, once: the twin's weights without its 63 MB optimiser state, in an ignored folder
#   mkdir -p .devcarry/ar-fim && cp runs/ar-fim/checkpoint/{config.json,model.safetensors,\
#   tokenizer.json} .devcarry/ar-fim/ && echo /.devcarry/ >> .git/info/exclude
#   # on the device (carry .devcarry and data/bible):
#   INIT=.devcarry/ar-fim SHIP=$OUT/hybrid MEASURE=0 bash benchmarks/hybrid_scale.sh
#   # here, with the weights that came back:
#   MEASURE=1 STEPS=0 SHIP=runs/hybrid-fp16 bash benchmarks/hybrid_scale.sh
#
# Every setting is an environment variable.
set -euo pipefail

PY=${PY:-python3}
INIT=${INIT:-runs/ar-fim/checkpoint}  # the AR twin (objective ar, the demo's tokenizer)
DATA=${DATA:-data/bible}
OUT=${OUT:-runs/hybrid}
SHIP=${SHIP:-runs/hybrid-fp16}        # float16 copy of the trained hybrid
STEPS=${STEPS:-2000}                  # 0: skip training, measure $SHIP
BATCH=${BATCH:-16}
SEQ=${SEQ:-256}
LR=${LR:-3e-4}
WARMUP=${WARMUP:-100}
DRAFT=${DRAFT:-8}                     # draft block k
DEVICE=${DEVICE:-auto}
TIME_LIMIT=${TIME_LIMIT:-0}           # minutes of training, then stop and save (0: none)
THREADS=${THREADS:-0}                 # 0: the physical cores (unmask train's default)
MEASURE=${MEASURE:-1}
DIFFUSION=${DIFFUSION:-src/unmask/assets/demo}  # drafter of the two-model rows
GEN_LENGTHS=${GEN_LENGTHS:-240}       # the demo context is 256 tokens
RESULT=${RESULT:-runs/bench/speculative.json}  # benchmarks/results: committed, name it
QUICK=${QUICK:-0}                     # 1: a smoke run of the measurement

if [ ! -f "$DATA/index.json" ]; then
    "$PY" -m unmask.cli prepare src/unmask/assets/web-bible.txt.gz -o "$DATA" \
        --tokenizer "$INIT/tokenizer.json" --val-fraction 0.02 --no-progress
fi

TFLAG=()                              # unmask train takes --threads N >= 1 only
if [ "$THREADS" -gt 0 ]; then
    TFLAG=(--threads "$THREADS")
fi

if [ "$STEPS" -gt 0 ]; then
    if [ -f "$OUT/train_config.json" ] && [ -d "$OUT/checkpoint" ]; then
        "$PY" -m unmask.cli train --resume --out "$OUT" --steps "$STEPS" --device "$DEVICE" \
            --time-limit "$TIME_LIMIT" "${TFLAG[@]}" --no-progress || [ $? -eq 75 ]
    else
        "$PY" -m unmask.cli train --data "$DATA" --out "$OUT" --objective hybrid \
            --init "$INIT" --draft-block "$DRAFT" --draft-weight 1 --seq-len "$SEQ" \
            --batch-size "$BATCH" --steps "$STEPS" --lr "$LR" --warmup "$WARMUP" --ema 0.999 \
            --eval-every 250 --save-every 250 --device "$DEVICE" "${TFLAG[@]}" \
            --time-limit "$TIME_LIMIT" --no-progress || [ $? -eq 75 ]
    fi                                # 75: --time-limit stopped it; ship what it has
    # convert refuses a folder that is not empty: a fresh one next to $SHIP, swapped in once
    # whole, so a resumed call ships again (and a failed convert leaves the old ship); the
    # full paths of mv and rm: PATH may hold python3 alone (tests/test_bench_outputs.py)
    SHIP=${SHIP%/}
    NEW="$SHIP.converting" OLD="$SHIP.replaced"
    if [ ! -e "$SHIP" ] && [ -d "$OLD" ]; then  # a call stopped between the two renames
        /bin/mv "$OLD" "$SHIP"
    fi
    /bin/rm -rf "$NEW" "$OLD"
    "$PY" -m unmask.cli convert "$OUT/checkpoint" "$NEW" --dtype fp16
    if [ -d "$NEW" ]; then
        if [ -e "$SHIP" ]; then
            /bin/mv "$SHIP" "$OLD"
        fi
        /bin/mv "$NEW" "$SHIP"
        /bin/rm -rf "$OLD"
    fi
fi

if [ "$MEASURE" = 1 ]; then
    EXTRA=()
    if [ "$QUICK" = 1 ]; then
        EXTRA+=(--quick)
    fi
    # shellcheck disable=SC2086  # GEN_LENGTHS is a list
    "$PY" benchmarks/speculative.py --ar-model "$INIT" --model "$DIFFUSION" --hybrid "$SHIP" \
        --gen-lengths $GEN_LENGTHS --batches 1 8 --threads "$THREADS" --json "$RESULT" "${EXTRA[@]}"
fi
