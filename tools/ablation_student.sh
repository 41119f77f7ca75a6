#!/usr/bin/env bash
# The student ablation of docs/results.md: same budget (EPOCHS), seed and one thread per row,
# two rows at a time. Needs TEACHER (default runs/t1) and TEACHER/pseudo/unlabeled.h5 (facepipe pseudolabel).
# Usage: tools/ablation_student.sh [EPOCHS] [TEACHER]   (rows go to runs/<TEACHER name>-s-*)
set -euo pipefail
E=${1:-60}
T=${2:-runs/t1}
P=$(basename "$T")
ev() { facepipe eval "runs/$1" data/fasseg.h5 --json "runs/$1/test.json" --device cpu -q; }
( facepipe train data/fasseg.h5 --out runs/$P-s-alone --arch student --loss ce --epochs "$E" --threads 1 --device cpu -q && ev $P-s-alone ) &
( facepipe distill --teacher $T --unlabeled none --out runs/$P-s-kd-labelled --epochs "$E" --threads 1 --device cpu -q && ev $P-s-kd-labelled ); wait
( facepipe distill --teacher $T --out runs/$P-s-kd-utk --epochs "$E" --threads 1 --device cpu -q && ev $P-s-kd-utk ) &
( facepipe distill --teacher $T --out runs/$P-s-kd-utk-conf0.8 --confidence 0.8 --epochs "$E" --threads 1 --device cpu -q && ev $P-s-kd-utk-conf0.8 ); wait
( facepipe distill --teacher $T --out runs/$P-s-kd-utk-T2 --temperature 2 --epochs "$E" --threads 1 --device cpu -q && ev $P-s-kd-utk-T2 )
python3 - "$E" "$P" <<'PY'
import json, sys
from pathlib import Path
P = sys.argv[2]
print(f"| student row (epochs {sys.argv[1]}) | pixel acc | overall F1 | eyes | nose | mouth |")
print("|---|---|---|---|---|---|")
for name in ("s-alone", "s-kd-labelled", "s-kd-utk", "s-kd-utk-conf0.8", "s-kd-utk-T2"):
    p = Path("runs") / f"{P}-{name}" / "test.json"
    if p.exists():
        r = json.loads(p.read_text()); f = r["per_class_f1"]
        print(f"| {name} | {r['pixel_acc']:.4f} | {r['overall_f1']:.4f} | {f['eyes']:.3f} | {f['nose']:.3f} | {f['mouth']:.3f} |")
PY
