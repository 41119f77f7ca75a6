#!/usr/bin/env bash
# The wild recipe's ablation (issue 13): the teacher (width 32) trained with one part of the recipe
# switched off per row, then scored on the robustness benchmark's four variants by tools/robust_table.py.
#
#   EPOCHS=40 LANE=a tools/ablation_wild.sh      # rows of lane a; run lane b in a second shell
#   EPOCHS=100 ROWS=paste-half OUT=runs/ablate100 tools/ablation_wild.sh   # chosen rows, full budget
#
# Each row is one `facepipe train` command (printed before it runs); one thread per run, so two lanes
# share 2 cores without thrashing. Rows whose output exists are skipped (train would refuse anyway).
set -euo pipefail
EPOCHS=${EPOCHS:-40}
OUT=${OUT:-runs/ablate}
PHOTO="hair=0,gray=0,hue=0,saturation=0,shadow=0,blur=0,noise=0,jpeg=0"   # every photometric part off
declare -A ROW=(
  [basic]="--augment basic"
  [no-paste]="--augment wild,paste=0"
  [no-photometric]="--augment wild,$PHOTO"
  [basic-geometry]="--augment wild,rotate=10,scale=0.1,shift=0.05,color=0.2"
  [no-gray]="--augment wild,gray=0"
  [wild-seed1]="--augment wild --seed 1"
  [no-hair]="--augment wild,hair=0"
  [paste-half]="--augment wild,paste=0.5"
)
case "${LANE:-all}" in
  a) NAMES="basic no-photometric no-gray" ;;
  b) NAMES="no-paste basic-geometry wild-seed1" ;;
  *) NAMES="${ROWS:-basic no-paste no-photometric basic-geometry no-gray wild-seed1}" ;;
esac
for name in $NAMES; do
  [ -f "$OUT/$name/manifest.json" ] && { echo "skip $name (done)"; continue; }
  cmd="facepipe train data/fasseg.h5 --out $OUT/$name --backgrounds data/backgrounds --epochs $EPOCHS --threads 1 ${ROW[$name]} -q"
  echo "$cmd"
  $cmd
done
