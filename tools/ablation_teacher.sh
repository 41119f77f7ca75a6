#!/usr/bin/env bash
# The teacher ablation of docs/results.md: every row the same budget (EPOCHS), seed and threads.
# Usage: tools/ablation_teacher.sh [EPOCHS] [THREADS] [WARMUP] [JOBS]
#   (needs data/fasseg.h5 and data/fasseg-letterbox.h5; README "The workflow on FASSEG" makes both)
# Every row gets the same epochs, threads per row, seed and sc/center warm-up. JOBS rows run at once
# (give JOBS x THREADS <= cores, or rows slow each other down). Rows are resumable: rerun after a kill.
# ROWS="ce-hm sc-hm" runs only those rows (e.g. to split the table between two shells or machines).
set -euo pipefail
E=${1:-20}; T=${2:-1}; W=${3:-200}; J=${4:-1}
row() {  # name cache extra-args...
  local name=$1 cache=$2; shift 2
  facepipe train "$cache" --out "runs/abl-$name" --epochs "$E" --threads "$T" --loss-warmup "$W" --device cpu -q "$@"
  OMP_NUM_THREADS="$T" facepipe eval "runs/abl-$name" "$cache" --json "runs/abl-$name/test.json" --device cpu -q
}
run() {  # start a row once fewer than J are running; a failed row fails the script at the end
  [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" $1 "* ]] || return 0
  while [ "$(jobs -rp | wc -l)" -ge "$J" ]; do wait -n || fail=1; done
  row "$@" &
}
fail=0
run ce-hm           data/fasseg.h5 --loss ce
run ce-nohm         data/fasseg.h5 --loss ce --no-heatmap
run center-hm       data/fasseg.h5 --loss center
run center-nohm     data/fasseg.h5 --loss center --no-heatmap
run sc-hm           data/fasseg.h5 --loss sc
run sc-nohm         data/fasseg.h5 --loss sc --no-heatmap
run sc-hm-letterbox data/fasseg-letterbox.h5 --loss sc
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || fail=1; done
[ "$fail" -eq 0 ] || { echo "a row failed; rerun the same command to resume it" >&2; exit 1; }
python3 - "$E" <<'PY'
import json, sys
from pathlib import Path
print(f"| row (epochs {sys.argv[1]}) | pixel acc | overall F1 | eyes | nose | mouth | mean F1 |")
print("|---|---|---|---|---|---|---|")
for p in sorted(Path("runs").glob("abl-*/test.json")):
    r = json.loads(p.read_text()); f = r["per_class_f1"]
    print(f"| {p.parent.name[4:]} | {r['pixel_acc']:.4f} | {r['overall_f1']:.4f} | {f['eyes']:.3f} | "
          f"{f['nose']:.3f} | {f['mouth']:.3f} | {r['mean_f1']:.3f} |")
PY
