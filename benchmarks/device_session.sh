#!/usr/bin/env bash
# One device session (issues 13, 14): on the GPU,
#  1. the demo model continued (mdlm, from src/unmask/assets/demo) for as many steps as
#     DEMO_S seconds allow (a 60-step probe measures the rate; steps rounded to 250),
#  2. the demo-size one-model hybrid trained from the AR twin (benchmarks/hybrid_scale.sh),
#  3. speculative/hybrid vs AR on CUDA at the demo and the bench size (benchmarks/speculative.py),
#  4. benchmarks/gpu_check.py's decode rows with what time is left.
# Weights come back as float16 copies in $OUT/demo and $OUT/hybrid; logs in $OUT/logs.tgz.
#
# Set-up, here, once (an ignored folder the device call carries, with the weights only):
#   echo /.devcarry/ >> .git/info/exclude
#   mkdir -p .devcarry/ar-fim .devcarry/bench/{ar,mdlm,hybrid8k}
#   cp TWIN/best/checkpoint/{config.json,model.safetensors,tokenizer.json} .devcarry/ar-fim/
#   # and the bench-size ar, mdlm and hybrid (docs/sampling.md, "At the bench size") alike
# Dry run on the CPU (seconds to minutes; checks the plumbing, not the numbers):
#   OUT=/tmp/dry PY=.venv/bin/python DEMO_S=20 DEMO_BATCH=2 HSTEPS=4 HMIN=1 DEVICE=cpu \
#     Q=--quick GC=--dry-run TOTAL=300 bash benchmarks/device_session.sh
# On the device (`run` with carry [".devcarry", "data/bible"], timeout 600):
#   TOTAL=575 DEMO_S=210 HMIN=2 bash benchmarks/device_session.sh
# data/bible: the demo corpus prepared as benchmarks/hybrid_scale.sh prepares it.
set -uo pipefail
PY=${PY:-python3}; DEV=${DEVICE:-cuda}
O=${OUT:-/tmp/out}; mkdir -p "$O/logs"; L="$O/logs"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
T0=$(date +%s); left() { echo $(( ${TOTAL:-540} - ($(date +%s) - T0) )); }
DEMO_S=${DEMO_S:-240}; DB=${DEMO_BATCH:-64}; HSTEPS=${HSTEPS:-3000}; Q=${Q:-}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch,sys;print(sys.version.split()[0],torch.__version__,torch.cuda.is_available())"; } 2>&1 | tee "$L/env.txt"
DEMO=(--data data/bible --preset demo --init src/unmask/assets/demo --seq-len 256
      --batch-size "$DB" --lr 1e-3 --ema 0.999 --eval-batches 8 --seed 2 --device "$DEV" --no-progress)
echo "== demo probe left $(left)s"
$PY -m unmask.cli train "${DEMO[@]}" --out /tmp/probe --steps 60 --warmup 10 --log-every 10 \
  --eval-every 1000 --save-every 1000 2>&1 | tail -3 | tee "$L/probe.txt"
STEPS=$($PY -c "
import json,sys
r=[json.loads(l) for l in open('/tmp/probe/metrics.jsonl') if '\"elapsed_s\"' in l]
a,b=r[1],r[-1]; rate=(b['step']-a['step'])/(b['elapsed_s']-a['elapsed_s'])
print(max(250, int(rate*$DEMO_S*0.85)//250*250))" 2>>"$L/probe.txt" || echo 500)
echo "== demo train $STEPS steps left $(left)s" | tee -a "$L/probe.txt"
timeout $((DEMO_S + 60)) $PY -m unmask.cli train "${DEMO[@]}" --out /tmp/demo --steps "$STEPS" \
  --warmup 200 --eval-every 500 --save-every 500 --keep-best --time-limit $((DEMO_S / 60 + 1)) \
  2>&1 | tail -5 | tee "$L/demo_train.txt"
cp /tmp/demo/metrics.jsonl "$L/demo_metrics.jsonl"; cp /tmp/demo/train_config.json "$L/demo_train_config.json"
$PY -m unmask.cli convert /tmp/demo/best/checkpoint "$O/demo" --dtype fp16 2>&1 | tail -2
echo "== hybrid train ($HSTEPS steps) left $(left)s"
PY=$PY INIT=.devcarry/ar-fim DATA=data/bible OUT=/tmp/hybrid SHIP="$O/hybrid" STEPS=$HSTEPS \
  DEVICE=$DEV MEASURE=0 BATCH=${HBATCH:-32} TIME_LIMIT=${HMIN:-2} timeout ${TRAIN_S:-170} bash benchmarks/hybrid_scale.sh 2>&1 \
  | tail -5 | tee "$L/hybrid_train.txt"
cp /tmp/hybrid/metrics.jsonl "$L/hybrid_metrics.jsonl"; cp /tmp/hybrid/train_config.json "$L/hybrid_train_config.json"
echo "== spec demo left $(left)s"
DRAFTER=src/unmask/assets/demo; [ -f "$O/demo/model.safetensors" ] && DRAFTER="$O/demo"
echo "drafter: $DRAFTER"
timeout ${SPEC_S:-100} $PY benchmarks/speculative.py --ar-model .devcarry/ar-fim --model "$DRAFTER" \
  --hybrid "$O/hybrid" --gen-lengths ${GEN:-240} --batches 1 8 --draft-lengths 2 4 8 --no-score \
  --device "$DEV" --repeats 3 --json "$L/speculative_demo_cuda.json" $Q 2>&1 | tee "$L/spec_demo.txt"
echo "== spec bench left $(left)s"
B=.devcarry/bench
timeout ${BENCH_S:-50} $PY benchmarks/speculative.py --ar-model $B/ar --model $B/mdlm --hybrid $B/hybrid8k \
  --gen-lengths 96 --batches 1 8 --draft-lengths 2 4 8 --no-score --device "$DEV" --repeats 3 \
  --json "$L/speculative_bench_cuda.json" $Q 2>&1 | tee "$L/spec_bench.txt"
R=$(left); echo "== gpu_check left ${R}s"
if [ "$R" -gt 45 ]; then
  timeout $((R - 5)) $PY benchmarks/gpu_check.py --budget-s $((R - 35)) --skip train --skip fsdp ${GC:-} \
    --json "$L/gpu_check_cuda.json" 2>&1 | tee "$L/gpu_check.txt"
fi
cd "$O" && tar czf logs.tgz logs && rm -rf logs
echo "== done in $(( $(date +%s) - T0 ))s"
