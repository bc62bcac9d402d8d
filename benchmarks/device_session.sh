#!/usr/bin/env bash
# One device session (issues 13, 14): on the GPU,
#  1. the demo model continued (mdlm, from src/unmask/assets/demo) for as many steps as
#     DEMO_S seconds allow (a 60-step probe measures the rate; steps rounded to 250),
#  2. a student distilled from it (#14) on greedy trajectories at scale (DN prompts, 240 tokens;
#     the 2-core CPU managed 96: docs/training.md, "The first run at length 240"),
#  3. a small drafter for the AR twin (#13): a fresh `bench`-preset mdlm distilled from the
#     twin's greedy continuations (unmask distill --student --distill-window 8),
#  4. the demo-size one-model hybrid trained from the AR twin (benchmarks/hybrid_scale.sh),
#  5. speculative/hybrid vs AR on CUDA at the demo size (benchmarks/speculative.py), then at the
#     bench size and benchmarks/gpu_check.py's decode rows if time is left (BENCH=1, GPU_CHECK=1).
# GEN="240 512" SEG=128: the spec stage also at 512, in segments of 128 (--segment-length).
# HYBRID_SELF=1: the hybrid stage makes the twin a hybrid on its own greedy continuations
# (unmask distill with the twin as --student; docs/training.md) instead of on the corpus;
# HBLOCK (default 8: a GPU forward costs the same for 2 or 8 draft columns; the CPU found 2).
# STAGES (default "demo distill drafter hybrid spec") picks the stages; "twin" (before the
# drafter) trains the AR twin there with its recorded recipe (~8M tokens to its best step: a
# minute on the H200, 50 minutes on two CPU threads) when .devcarry holds none. Weights come
# back as float16 copies in $OUT/{demo,student,drafter,hybrid,twin}.tar (a device returns at
# most 8 files); logs in $OUT/logs.tgz. Measure them here, where the goals are set.
#
# Set-up, here, once (an ignored folder the device call carries, with the weights only):
#   echo /.devcarry/ >> .git/info/exclude
#   mkdir -p .devcarry/ar-fim .devcarry/bench/{ar,mdlm,hybrid8k}
#   cp TWIN/best/checkpoint/{config.json,model.safetensors,tokenizer.json} .devcarry/ar-fim/
#   # and the bench-size ar, mdlm and hybrid (docs/sampling.md, "At the bench size") alike
# Dry run on the CPU (seconds to minutes; checks the plumbing, not the numbers):
#   OUT=/tmp/dry PY=.venv/bin/python DEMO_S=20 DEMO_BATCH=2 HSTEPS=4 HMIN=1 DEVICE=cpu DN=8 DTB=4 \
#     DBATCH=2 DMIN=0.2 RN=8 RTB=4 RBATCH=2 RMIN=0.2 Q=--quick TOTAL=400 \
#     bash benchmarks/device_session.sh
# On the device (`run` with carry [".devcarry", "data/bible"], timeout 600); the 2026-12-04
# session ran the first, whose distillation was cut by its time box while the trajectories
# were decoded (110 s for 2,048), and resumed by hand:
#   TOTAL=560 DEMO_S=170 HMIN=1.5 TRAIN_S=130 bash benchmarks/device_session.sh
#   STAGES="demo distill drafter spec" TOTAL=560 DEMO_S=150 DISTILL_S=200 \
#     bash benchmarks/device_session.sh
# data/bible: the demo corpus prepared as benchmarks/hybrid_scale.sh prepares it.
# Runs train in WORK/unmask_device_session (WORK default /tmp; WORK=/ or $HOME is refused):
# a stage DELETES its own folder there first (probe, demo, distill, twin, small0, drafter,
# hybrid), so a second call on the same machine trains afresh where train/distill refused
# the folder (and a stage skipped reuses the last call's: distill the demo of an earlier
# call). Nothing else under WORK is touched: a user's runs/twin survives WORK=runs.
set -uo pipefail
PY=${PY:-python3}; DEV=${DEVICE:-cuda}
O=${OUT:-/tmp/out}; WORK=${WORK:-/tmp}
case "$(realpath -m -- "$WORK")" in  # its stage folders were /tmp/demo, runs/twin ...: others'
  / | "$(realpath -m -- "${HOME:-/}")")
    echo "device_session.sh: error: WORK=$WORK is / or \$HOME (a folder for its runs)" >&2
    exit 2 ;;
esac
W="$WORK/unmask_device_session"; mkdir -p "$O/logs"; L="$O/logs"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
T0=$(date +%s); left() { echo $(( ${TOTAL:-540} - ($(date +%s) - T0) )); }
STAGES=" ${STAGES:-demo distill drafter hybrid spec} "; want() { [[ "$STAGES" == *" $1 "* ]]; }
DEMO_S=${DEMO_S:-240}; DB=${DEMO_BATCH:-64}; HSTEPS=${HSTEPS:-3000}; Q=${Q:-}
if ! $PY -c "import torch" 2>/dev/null; then  # was blamed on CUDA below, torch being absent
  echo "device_session.sh: error: $PY cannot import torch (set PY to the environment's python)" >&2
  exit 2
fi
if [[ $DEV == cuda* ]] && ! $PY -c "import torch,sys; sys.exit(not torch.cuda.is_available())" \
    2>/dev/null; then  # every stage failed on its own, and the session "done" with nothing
  echo "device_session.sh: error: DEVICE=$DEV but $PY sees no CUDA device (DEVICE=cpu and the" \
    "small sizes of the header's dry run check the plumbing here)" >&2
  exit 2
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch,sys;print(sys.version.split()[0],torch.__version__,torch.cuda.is_available())"; } 2>&1 | tee "$L/env.txt"
DEMO=(--data data/bible --preset demo --init src/unmask/assets/demo --seq-len 256
      --batch-size "$DB" --lr 1e-3 --ema 0.999 --eval-batches 8 --seed 2 --device "$DEV" --no-progress)
echo "== demo probe left $(left)s"  # (its rate sizes the demo and distill stages)
rm -rf "$W/probe"  # a run folder of an earlier call: train and distill refuse one
$PY -m unmask.cli train "${DEMO[@]}" --out "$W/probe" --steps 60 --warmup 10 --log-every 10 \
  --eval-every 1000 --save-every 1000 2>&1 | tail -3 | tee "$L/probe.txt"
read -r STEPS DSTEPS < <($PY -c "
import json, sys
r=[json.loads(l) for l in open(sys.argv[1]) if '\"elapsed_s\"' in l]
a,b=r[1],r[-1]; rate=(b['step']-a['step'])/(b['elapsed_s']-a['elapsed_s'])
n=lambda s: max(250, int(rate*s*0.85)//250*250)
print(n($DEMO_S), n(60*${DMIN:-1.3}))" "$W/probe/metrics.jsonl" 2>>"$L/probe.txt" \
  || echo 500 500)
echo "== demo train $STEPS steps (distill $DSTEPS) left $(left)s" | tee -a "$L/probe.txt"
if want demo; then
  rm -rf "$W/demo"
  timeout $((DEMO_S + 60)) $PY -m unmask.cli train "${DEMO[@]}" --out "$W/demo" --steps "$STEPS" \
    --warmup 200 --eval-every 500 --save-every 500 --keep-best --time-limit $((DEMO_S / 60 + 1)) \
    2>&1 | tail -5 | tee "$L/demo_train.txt"
  cp "$W/demo/metrics.jsonl" "$L/demo_metrics.jsonl"; cp "$W/demo/train_config.json" "$L/demo_train_config.json"
  $PY -m unmask.cli convert "$W/demo/best/checkpoint" "$O/demo" --dtype fp16 2>&1 | tail -2
fi
if want distill; then
  echo "== distill left $(left)s"
  TEACH="$W/demo/best/checkpoint"; [ -f "$TEACH/model.safetensors" ] || TEACH=src/unmask/assets/demo
  echo "teacher: $TEACH" | tee "$L/distill.txt"
  rm -rf "$W/distill"
  timeout ${DISTILL_S:-130} $PY -m unmask.cli distill --teacher "$TEACH" --data data/bible \
    --out "$W/distill" --trajectories ${DN:-2048} --prompt-length 16 --gen-length 240 \
    --traj-batch ${DTB:-256} --traj-cache none --traj-temperature 0 --steps "$DSTEPS" \
    --batch-size ${DBATCH:-64} --lr 5e-4 --warmup 50 --save-every 250 --log-every 50 \
    --device "$DEV" --time-limit ${DMIN:-1.3} --no-progress 2>&1 | tail -5 | tee -a "$L/distill.txt"
  cp "$W/distill/metrics.jsonl" "$L/distill_metrics.jsonl"
  cp "$W/distill/train_config.json" "$L/distill_train_config.json"
  $PY -m unmask.cli convert "$W/distill/checkpoint" "$O/student" --dtype fp16 2>&1 | tail -2
fi
TWIN=.devcarry/ar-fim  # the AR twin: carried, or trained here by the twin stage
if want twin; then  # the twin's recorded recipe (docs/training.md, "Small corpora"): best step kept
  echo "== twin left $(left)s" | tee "$L/twin.txt"
  rm -rf "$W/twin"
  timeout ${TWIN_S:-150} $PY -m unmask.cli train --data data/bible --out "$W/twin" --preset demo \
    --objective ar --fim-rate 0.5 --seq-len 256 --batch-size 16 --steps ${TSTEPS:-3000} \
    --lr 2e-3 --warmup 200 --ema 0.999 --eval-every 250 --eval-batches 8 --save-every 250 \
    --keep-best --seed 0 --device "$DEV" --time-limit ${TMIN:-2} --no-progress 2>&1 | tail -5 \
    | tee -a "$L/twin.txt"
  cp "$W/twin/metrics.jsonl" "$L/twin_metrics.jsonl"
  for c in "$W/twin/best/checkpoint" "$W/twin/checkpoint"; do
    [ -f "$c/model.safetensors" ] && TWIN=$c && break
  done
  $PY -m unmask.cli convert "$TWIN" "$O/twin" --dtype fp16 2>&1 | tail -2
fi
echo "twin: $TWIN" | tee -a "$L/env.txt"
if want drafter; then
  echo "== drafter left $(left)s" | tee "$L/drafter.txt"
  rm -rf "$W/small0" "$W/drafter"
  SI=${DRAFT_INIT:-}  # the student; unset: a fresh bench-preset model (the CPU found a
  if [ -z "$SI" ]; then  # demo-size one, distilled, 1.07-1.14x AR: docs/sampling.md)
    SI="$W/small0"
    $PY -m unmask.cli train --data data/bible --out "$SI" --preset bench --seq-len 256 --steps 1 \
      --batch-size 2 --eval-every 0 --save-every 0 --device "$DEV" --no-progress 2>&1 | tail -1
  fi
  timeout ${DRAFTER_S:-150} $PY -m unmask.cli distill --teacher "$TWIN" --student "$SI" \
    --data data/bible --out "$W/drafter" --trajectories ${RN:-8192} --prompt-length 16 \
    --gen-length 240 --traj-batch ${RTB:-512} --traj-temperature 0 --distill-window 8 \
    --steps ${RSTEPS:-4000} --batch-size ${RBATCH:-128} --lr 2e-3 --warmup 200 --save-every 1000 \
    --log-every 100 --device "$DEV" --time-limit ${RMIN:-1.5} --no-progress 2>&1 | tail -5 \
    | tee -a "$L/drafter.txt"
  cp "$W/drafter/metrics.jsonl" "$L/drafter_metrics.jsonl"
  $PY -m unmask.cli convert "$W/drafter/checkpoint" "$O/drafter" --dtype fp16 2>&1 | tail -2
fi
if want hybrid && [ "${HYBRID_SELF:-0}" = 1 ]; then  # the twin drafting its own greedy text
  echo "== hybrid (self-distilled) left $(left)s" | tee "$L/hybrid_train.txt"
  rm -rf "$W/hybrid"
  timeout ${TRAIN_S:-170} $PY -m unmask.cli distill --teacher "$TWIN" --student "$TWIN" \
    --data data/bible --out "$W/hybrid" --trajectories ${HN:-4096} --prompt-length 16 \
    --gen-length 240 --traj-batch ${HTB:-512} --traj-temperature 0 --draft-block ${HBLOCK:-8} \
    --steps ${HSTEPS:-3000} --batch-size ${HBATCH:-64} --lr 5e-4 --warmup 100 --save-every 500 \
    --log-every 50 --device "$DEV" --time-limit ${HMIN:-2} --no-progress 2>&1 | tail -5 \
    | tee -a "$L/hybrid_train.txt"
  cp "$W/hybrid/metrics.jsonl" "$L/hybrid_metrics.jsonl"
  $PY -m unmask.cli convert "$W/hybrid/checkpoint" "$O/hybrid" --dtype fp16 2>&1 | tail -2
elif want hybrid; then
  echo "== hybrid train ($HSTEPS steps) left $(left)s"
  rm -rf "$W/hybrid"  # hybrid_scale.sh would resume it
  PY=$PY INIT="$TWIN" DATA=data/bible OUT="$W/hybrid" SHIP="$O/hybrid" STEPS=$HSTEPS \
    DEVICE=$DEV MEASURE=0 BATCH=${HBATCH:-32} TIME_LIMIT=${HMIN:-2} timeout ${TRAIN_S:-170} \
    bash benchmarks/hybrid_scale.sh 2>&1 | tail -5 | tee "$L/hybrid_train.txt"
  cp "$W/hybrid/metrics.jsonl" "$L/hybrid_metrics.jsonl"
  cp "$W/hybrid/train_config.json" "$L/hybrid_train_config.json"
fi
S=$(( $(left) - 25 )); [ "$S" -gt "${SPEC_S:-80}" ] && S=${SPEC_S:-80}
if want spec && [ "$S" -gt 15 ]; then
  echo "== spec demo ${S}s, left $(left)s"
  DRAFTER=src/unmask/assets/demo
  for d in "$O/drafter" "$O/demo"; do [ -f "$d/model.safetensors" ] && DRAFTER="$d" && break; done
  HYB=(); [ -f "$O/hybrid/model.safetensors" ] && HYB=(--hybrid "$O/hybrid")
  echo "drafter: $DRAFTER"
  timeout "$S" $PY benchmarks/speculative.py --ar-model "$TWIN" --model "$DRAFTER" \
    "${HYB[@]}" --gen-lengths ${GEN:-240} ${SEG:+--segment-length $SEG} --batches 1 8 \
    --draft-lengths 2 4 8 --no-score \
    --device "$DEV" --repeats 3 --json "$L/speculative_demo_cuda.json" $Q 2>&1 | tee "$L/spec_demo.txt"
fi
B=.devcarry/bench
if [ "${BENCH:-0}" = 1 ]; then
  echo "== spec bench left $(left)s"
  timeout ${BENCH_S:-50} $PY benchmarks/speculative.py --ar-model $B/ar --model $B/mdlm \
    --hybrid $B/hybrid8k --gen-lengths 96 --batches 1 8 --draft-lengths 2 4 8 --no-score \
    --device "$DEV" --repeats 3 --json "$L/speculative_bench_cuda.json" $Q 2>&1 | tee "$L/spec_bench.txt"
fi
R=$(left); echo "== gpu_check left ${R}s"
if [ "${GPU_CHECK:-0}" = 1 ] && [ "$R" -gt 45 ]; then
  timeout $((R - 5)) $PY benchmarks/gpu_check.py --budget-s $((R - 35)) --skip train --skip fsdp ${GC:-} \
    --json "$L/gpu_check_cuda.json" 2>&1 | tee "$L/gpu_check.txt"
fi
cd "$O" && tar czf logs.tgz logs && rm -rf logs
for m in demo student drafter hybrid twin; do [ -d $m ] && tar cf $m.tar $m && rm -rf $m; done; ls -la
echo "== done in $(( $(date +%s) - T0 ))s"
