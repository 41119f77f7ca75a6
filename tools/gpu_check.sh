#!/usr/bin/env bash
# One prepared GPU check (run on a CUDA machine from the repo root; writes under ${OUT:-gpu-out}):
#  1. the CUDA training path (AMP) and eval on the procedural set, end to end through the CLI;
#  2. teacher, student and bisenet-r18 FPS at 256 and 512, batch 1 and 32, fp32 / fp16 / bf16.
# Needs torch with CUDA, click, rich, h5py, scikit-image, scipy, onnxruntime (dlib is not needed).
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
W=$(mktemp -d)
$py - "$W" <<'PY' 2>&1 | tee "$OUT/train.log"
import sys, time
from facepipe.data.synthetic import write_folder_set
from facepipe.data.importers import import_dataset
from facepipe.data.align import AlignConfig, run_align
from facepipe.data.cache import CacheConfig, run_cache
from facepipe.learn.train import TrainConfig, train
w = sys.argv[1]
write_folder_set(f"{w}/raw", n=48, seed=0)
import_dataset("folder", f"{w}/raw", f"{w}/imp")
run_align(AlignConfig(src=f"{w}/imp", out=f"{w}/al", size=256, landmarks="dataset"))
run_cache(CacheConfig(src=f"{w}/al", out=f"{w}/c.h5"))
for dev in ("cuda", "cpu"):
    t = time.time()
    m = train(TrainConfig(cache=f"{w}/c.h5", out=f"{w}/run-{dev}", arch="teacher", epochs=10, val_split="test",
                          loss_warmup=20, device=dev))
    print(dev, "10 epochs of teacher on 36 faces at 256:", round(time.time() - t, 1), "s", m["eval"])
PY
for dt in fp32 fp16 bf16; do
  $py -m facepipe bench --fps --device cuda --dtype $dt --arch teacher --arch student --arch bisenet-r18 \
     --size 256 --size 512 --batch 1 --batch 32 --seconds 1.5 --json "$OUT/bench-$dt.json" 2>&1 | tee "$OUT/bench-$dt.txt"
done
