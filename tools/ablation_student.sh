#!/usr/bin/env bash
# The student ablation of docs/results.md: same budget (EPOCHS), seed and one thread per row,
# two rows at a time. Needs runs/t1 (teacher) and runs/t1/pseudo/unlabeled.h5 (facepipe pseudolabel).
# Usage: tools/ablation_student.sh [EPOCHS]
set -euo pipefail
E=${1:-60}
ev() { facepipe eval "runs/$1" data/fasseg.h5 --json "runs/$1/test.json" --device cpu -q; }
( facepipe train data/fasseg.h5 --out runs/s-alone --arch student --loss ce --epochs "$E" --threads 1 --device cpu -q && ev s-alone ) &
( facepipe distill --teacher runs/t1 --unlabeled none --out runs/s-kd-labelled --epochs "$E" --threads 1 --device cpu -q && ev s-kd-labelled ); wait
( facepipe distill --teacher runs/t1 --out runs/s-kd-utk --epochs "$E" --threads 1 --device cpu -q && ev s-kd-utk ) &
( facepipe distill --teacher runs/t1 --out runs/s-kd-utk-conf0.8 --confidence 0.8 --epochs "$E" --threads 1 --device cpu -q && ev s-kd-utk-conf0.8 ); wait
( facepipe distill --teacher runs/t1 --out runs/s-kd-utk-T2 --temperature 2 --epochs "$E" --threads 1 --device cpu -q && ev s-kd-utk-T2 )
python3 - "$E" <<'PY'
import json, sys
from pathlib import Path
print(f"| student row (epochs {sys.argv[1]}) | pixel acc | overall F1 | eyes | nose | mouth |")
print("|---|---|---|---|---|---|")
for name in ("s-alone", "s-kd-labelled", "s-kd-utk", "s-kd-utk-conf0.8", "s-kd-utk-T2"):
    p = Path("runs") / name / "test.json"
    if p.exists():
        r = json.loads(p.read_text()); f = r["per_class_f1"]
        print(f"| {name} | {r['pixel_acc']:.4f} | {r['overall_f1']:.4f} | {f['eyes']:.3f} | {f['nose']:.3f} | {f['mouth']:.3f} |")
PY
