#!/usr/bin/env bash
# The checkpoint series of docs/compare.md: train the embedded model's recipe saving checkpoints, run
# table1 + contrast on each, compare them. Resumable: run it again and finished parts are skipped
# (training resumes from OUT/train/checkpoint.pt; a checkpoint whose run folder has summary.json is not rerun).
#   bash benchmarks/checkpoint_series.sh OUT [fp32|bf16]      (times are appended to OUT/times.log)
set -euo pipefail
OUT=${1:?usage: checkpoint_series.sh OUT [fp32|bf16]}
PRECISION=${2:-fp32}
PY=${PYTHON:-python}
DATA=${MATCHSIG_DATA:-../shared/data}
STEPS=(000000 000040 000080 000160 000320)
mkdir -p "$OUT"
log() { echo "$*" | tee -a "$OUT/times.log"; }
log "start $(date -u +%FT%TZ) precision $PRECISION"
t=$(date +%s)
until [ -f "$OUT/train/checkpoints/step-000320/config.json" ]; do
  $PY -m matchsig train --out "$OUT/train" --data "$DATA" --seed 0 --minutes 120 \
      --save-steps 0,40,80,160,320 --precision "$PRECISION"
done
log "train $(( $(date +%s) - t )) s"
for s in "${STEPS[@]}"; do
  [ -f "$OUT/runs/step-$s/summary.json" ] && continue
  t=$(date +%s)
  $PY -m matchsig experiments --model "$OUT/train/checkpoints/step-$s" --dataset demo --per-grade 2 \
      --experiments table1,contrast --out "$OUT/runs/step-$s"
  log "step-$s experiments $(( $(date +%s) - t )) s"
done
t=$(date +%s)
$PY -m matchsig compare $(printf "$OUT/runs/step-%s " "${STEPS[@]}") --out "$OUT/runs/series"
log "compare $(( $(date +%s) - t )) s"
log "end $(date -u +%FT%TZ)"
