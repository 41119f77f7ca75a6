#!/usr/bin/env bash
# Rebuild the models shipped in facepipe/assets/ (default.pt, accurate.pt; see their MODEL_CARD*.md) from
# scratch, on FASSEG and utkface-5k. Every step is a facepipe command; the last two pack the student and the teacher.
set -euo pipefail
S=${SHARED:-../shared/data}
facepipe import fasseg "$S/fasseg" data/fasseg -q
facepipe landmarks data/fasseg data/fasseg-lm -q
facepipe align data/fasseg data/fasseg-aligned --landmarks data/fasseg-lm -q
facepipe cache data/fasseg-aligned data/fasseg.h5 -q
apt-get install -y -qq ukui-wallpapers plasma-workspace-wallpapers lomiri-wallpapers
facepipe backgrounds /usr/share/wallpapers /usr/share/backgrounds data/backgrounds --exclude '*/mate/*' -q
facepipe train data/fasseg.h5 --out runs/tw --backgrounds data/backgrounds -q
# two more cosine cycles of the teacher from its own weights (220 epochs in all): the default's teacher
facepipe train data/fasseg.h5 --out runs/tw2 --init runs/tw --epochs 60 --lr 0.001 --backgrounds data/backgrounds -q
facepipe train data/fasseg.h5 --out runs/tw3 --init runs/tw2 --epochs 60 --lr 0.001 --backgrounds data/backgrounds -q
# accurate: four cycles more (460 epochs in all)
for i in 4 5 6 7; do
    facepipe train data/fasseg.h5 --out runs/tw$i --init runs/tw$((i - 1)) --epochs 60 --lr 0.001 \
        --backgrounds data/backgrounds -q
done
# default: an s16 student distilled from runs/tw3 for 120 epochs and one more 60-epoch cycle from its own
# weights (fp32: --no-amp), then grown to widths 24, 48, 96 (`--init` widens it without changing its
# function) and distilled three more cycles from runs/tw5 with runs/tw5's pseudo-labels (docs/results.md,
# "The teacher at 96%; a wider student within a point of it")
# (pseudolabel's --outside-photo teacher: what pseudolabel did before the option existed, kept so that these
# steps rerun as they ran; the last step below uses the default, ignore)
facepipe landmarks "$S/unlabeled/utkface-5k" data/utk-lm -q
facepipe align "$S/unlabeled/utkface-5k" data/utk-aligned --landmarks data/utk-lm -q
facepipe cache data/utk-aligned data/utk.h5 -q
facepipe pseudolabel --teacher runs/tw3 data/utk.h5 --outside-photo teacher -q
facepipe distill --teacher runs/tw3 --out runs/tw3-student --epochs 120 --backgrounds data/backgrounds -q
facepipe distill --teacher runs/tw3 --out runs/tw3-student2 --init runs/tw3-student --epochs 60 --lr 0.002 \
    --no-amp --backgrounds data/backgrounds -q
facepipe pseudolabel --teacher runs/tw5 data/utk.h5 data/utk-pseudo-tw5.h5 --outside-photo teacher -q
prev=runs/tw3-student2
for i in 1 2 3; do
    facepipe distill --teacher runs/tw5 --labeled data/fasseg.h5 --unlabeled data/utk-pseudo-tw5.h5 \
        --init $prev --model-kwargs '{"widths": [24, 48, 96]}' --out runs/s24-w$i --epochs 60 --lr 0.002 \
        --backgrounds data/backgrounds -q
    prev=runs/s24-w$i
done
# accurate, last cycle: faces cut the way `parse --detector hog+cnn` cuts them (HOG landmarks where HOG finds
# the face, the CNN's box at 2.0 eye distances where only the CNN finds it and its landmarks are not trusted)
facepipe landmarks data/fasseg data/fasseg-lmhc --detector hog+cnn -q
facepipe align data/fasseg data/fasseg-hc-b2.0 --landmarks data/fasseg-lmhc --box-width 2.0 -q
facepipe cache data/fasseg-hc-b2.0 data/fasseg-hc-b2.0.h5 -q
facepipe train data/fasseg-hc-b2.0.h5 --out runs/tw8 --init runs/tw7 --epochs 60 --lr 0.001 \
    --backgrounds data/backgrounds -q
python3 -m facepipe.infer.pack runs/tw8 facepipe/assets/accurate.pt --fp16
# default, last cycle: from runs/tw8 on the same hog+cnn crops
facepipe distill --teacher runs/tw8 --labeled data/fasseg-hc-b2.0.h5 --unlabeled data/utk-pseudo-tw5.h5 \
    --init runs/s24-w3 --model-kwargs '{"widths": [24, 48, 96]}' --out runs/s24-w4 --epochs 60 --lr 0.002 \
    --backgrounds data/backgrounds -q
python3 -m facepipe.infer.pack runs/s24-w4 facepipe/assets/default.pt
# last cycles of both: turned faces cut with the crop moved toward the back of the head (align --turn-shift 4;
# docs/results.md, "Turned faces"); the teacher from the accurate.pt just packed, then its pseudo-labels on
# utkface-5k cut the same way, then the default from the default.pt just packed
facepipe align data/fasseg data/fasseg-hc-b2.0-t4 --landmarks data/fasseg-lmhc --box-width 2.0 --turn-shift 4 -q
facepipe cache data/fasseg-hc-b2.0-t4 data/fasseg-hc-b2.0-t4.h5 -q
facepipe train data/fasseg-hc-b2.0-t4.h5 --out runs/turn/acc-t4 --init accurate --epochs 60 --lr 0.001 \
    --backgrounds data/backgrounds -q
facepipe align "$S/unlabeled/utkface-5k" data/utk-aligned-t4 --landmarks data/utk-lm --turn-shift 4 -q
facepipe cache data/utk-aligned-t4 data/utk-t4.h5 -q
facepipe pseudolabel --teacher runs/turn/acc-t4 data/utk-t4.h5 data/utk-pseudo-t4.h5 --outside-photo teacher -q
facepipe distill --teacher runs/turn/acc-t4 --labeled data/fasseg-hc-b2.0-t4.h5 --unlabeled data/utk-pseudo-t4.h5 \
    --init default --model-kwargs '{"widths": [24, 48, 96]}' --out runs/turn/s24-t4 --epochs 60 --lr 0.0005 \
    --backgrounds data/backgrounds -q
python3 -m facepipe.infer.pack runs/turn/acc-t4 facepipe/assets/accurate.pt --fp16
# the default's grayscale branch (docs/results.md, "A grayscale branch"): the same student shown only grayscale
# faces, then widened to 32, 64, 128; packed beside the colour network, it takes the faces with next to no colour
G="--teacher runs/turn/acc-t4 --labeled data/fasseg-hc-b2.0-t4.h5 --unlabeled data/utk-pseudo-t4.h5 --augment wild,gray=1 \
   --backgrounds data/backgrounds --epochs 60 -q"
facepipe distill $G --init runs/turn/s24-t4 --model-kwargs '{"widths": [24, 48, 96]}' --lr 0.0005 --out runs/gray/gx100
facepipe distill $G --init runs/gray/gx100 --model-kwargs '{"widths": [32, 64, 128]}' --lr 0.001 --out runs/gray/gx100-s32
python3 -m facepipe.infer.pack runs/turn/s24-t4 facepipe/assets/default.pt --gray runs/gray/gx100-s32
# last (docs/results.md, "The default's last F1 gap"): the colour network widened to 32, 64, 128 without grayscale
# faces (the branch takes them), and the gray branch widened to 40, 80, 160, 60 more epochs each
T="--teacher runs/turn/acc-t4 --labeled data/fasseg-hc-b2.0-t4.h5 --unlabeled data/utk-pseudo-t4.h5 \
   --backgrounds data/backgrounds --epochs 60 --lr 0.001 -q"
facepipe distill $T --init runs/turn/s24-t4 --model-kwargs '{"widths": [32, 64, 128]}' --augment wild,gray=0 \
    --out runs/wide/c0-s32
facepipe distill $T --init runs/gray/gx100-s32 --model-kwargs '{"widths": [40, 80, 160]}' --augment wild,gray=1 \
    --out runs/wide/gx100-s40-c2
python3 -m facepipe.infer.pack runs/wide/c0-s32 facepipe/assets/default.pt --gray runs/wide/gx100-s40-c2
# one more cycle of the colour network (docs/results.md, "One more colour cycle"): 40 epochs at lr 0.0005, the
# same recipe; more hair recolouring (hair=0.7) was tried beside it and lost on plain and pasted photos
facepipe distill --teacher runs/turn/acc-t4 --labeled data/fasseg-hc-b2.0-t4.h5 --unlabeled data/utk-pseudo-t4.h5 \
    --backgrounds data/backgrounds --init runs/wide/c0-s32 --model-kwargs '{"widths": [32, 64, 128]}' \
    --augment wild,gray=0 --epochs 40 --lr 0.0005 --out runs/hairp/c0-s32-h35 -q
python3 -m facepipe.infer.pack runs/hairp/c0-s32-h35 facepipe/assets/default.pt --gray runs/wide/gx100-s40-c2
# and one more 40-epoch cycle of both networks (docs/results.md, "One more cycle of both networks")
facepipe distill --teacher runs/turn/acc-t4 --labeled data/fasseg-hc-b2.0-t4.h5 --unlabeled data/utk-pseudo-t4.h5 \
    --backgrounds data/backgrounds --init runs/hairp/c0-s32-h35 --model-kwargs '{"widths": [32, 64, 128]}' \
    --augment wild,gray=0 --epochs 40 --lr 0.0005 --out runs/hairp/c0-s32-c3 -q
facepipe distill --teacher runs/turn/acc-t4 --labeled data/fasseg-hc-b2.0-t4.h5 --unlabeled data/utk-pseudo-t4.h5 \
    --backgrounds data/backgrounds --init runs/wide/gx100-s40-c2 --model-kwargs '{"widths": [40, 80, 160]}' \
    --augment wild,gray=1 --epochs 40 --lr 0.0005 --out runs/hairp/gx100-s40-c3 -q
python3 -m facepipe.infer.pack runs/hairp/c0-s32-c3 facepipe/assets/default.pt --gray runs/hairp/gx100-s40-c3
# The same pack, rerun once toned photos were routed (docs/results.md, "Toned photos take the gray branch"):
# pack now stores the toned cut beside the saturation cut; the weights are the same.
# The fast default (docs/results.md, "The fast default's stem and skips"): the colour network's stem cut from 32
# channels to 16 (`distill --init` keeps the leading 16) and the context blocks' ReLU moved after the skip's add
# (the form onnxruntime fuses), distilled 60 epochs at lr 0.001 and two cycles of 40 at lr 0.0005, same teacher;
# the gray branch is kept as it is (`--gray` of a packed model takes its gray branch).
F="--teacher runs/turn/acc-t4 --labeled data/fasseg-hc-b2.0-t4.h5 --unlabeled data/utk-pseudo-t4.h5 \
   --backgrounds data/backgrounds --augment wild,gray=0 -q"
K='{"widths": [32, 64, 128], "stem_width": 16, "relu_after_add": true}'
facepipe distill $F --init runs/hairp/c0-s32-c3 --model-kwargs "$K" --epochs 60 --lr 0.001 --out runs/speed/bc16
facepipe distill $F --init runs/speed/bc16 --model-kwargs "$K" --epochs 40 --lr 0.0005 --out runs/speed/bc16-c2
facepipe distill $F --init runs/speed/bc16-c2 --model-kwargs "$K" --epochs 40 --lr 0.0005 --out runs/speed/bc16-c3
python3 -m facepipe.infer.pack runs/speed/bc16-c3 facepipe/assets/default.pt --gray runs/hairp/gx100-s40-c3
# Pseudo-labels inside the photo (docs/results.md, "Pseudo-labels outside the photo"): utkface-5k labelled again
# with nothing stored on the black fill around each tight photo (pseudolabel's default, --outside-photo ignore),
# then 60 + 40 epochs of the colour network and 40 of the gray branch on them (run here from the packed default's
# gray branch, whose weights are those of runs/hairp/gx100-s40-c3), teacher `accurate` (runs/turn/acc-t4 packed).
facepipe pseudolabel --teacher accurate data/utk-t4.h5 data/utk-pseudo-t4-in.h5 -q
I="--teacher accurate --labeled data/fasseg-hc-b2.0-t4.h5 --unlabeled data/utk-pseudo-t4-in.h5 \
   --backgrounds data/backgrounds --lr 0.0005 -q"
facepipe distill $I --augment wild,gray=0 --init runs/speed/bc16-c3 --model-kwargs "$K" --epochs 60 --out runs/outside/in
facepipe distill $I --augment wild,gray=0 --init runs/outside/in --model-kwargs "$K" --epochs 40 --out runs/outside/in-c2
facepipe distill $I --augment wild,gray=1 --init runs/hairp/gx100-s40-c3 --model-kwargs '{"widths": [40, 80, 160]}' \
    --epochs 40 --out runs/outside/gray-in
# and 40 more epochs with the labelled faces' fill (FASSEG's photos end at the hair) left out of both losses too
facepipe distill $I --augment wild,gray=0 --init runs/outside/in-c2 --model-kwargs "$K" --epochs 40 --outside-photo ignore \
    --out runs/outside/ign
python3 -m facepipe.infer.pack runs/outside/ign facepipe/assets/default.pt --gray runs/outside/gray-in
# for speed on AVX2-only CPUs (docs/results.md, "The default at stride-8 width 96"): the colour network's stride-8
# width cut from 128 to 96 (--init keeps the leading channels), 60 epochs at lr 0.001 and 40 at 0.0005; the gray
# branch packed beside it is the one just packed (a packed model's gray branch is kept as it is).
K96='{"widths": [32, 64, 96], "stem_width": 16, "relu_after_add": true}'
facepipe distill $I --augment wild,gray=0 --init default --model-kwargs "$K96" --epochs 60 --lr 0.001 \
    --outside-photo ignore --out runs/narrow/c96
facepipe distill $I --augment wild,gray=0 --init runs/narrow/c96 --model-kwargs "$K96" --epochs 40 \
    --outside-photo ignore --out runs/narrow/c96-c2
cp facepipe/assets/default.pt runs/narrow/default-128.pt
python3 -m facepipe.infer.pack runs/narrow/c96-c2 facepipe/assets/default.pt --gray runs/narrow/default-128.pt
# the gray branch, 40 more epochs with the fill beyond the labelled photos left out as the colour network's last
# cycles had it (docs/results.md, "The gray branch with the fill beyond the labelled photos left out"), from the
# packed default's gray branch (as a one-network checkpoint), packed beside the same colour network
mkdir -p runs/grayout
python3 - <<'PY'
import torch
ck = torch.load("facepipe/assets/default.pt", map_location="cpu", weights_only=False)
g = ck.pop("gray_branch")
ck.update(arch=g["arch"], model_kwargs=g["model_kwargs"], state_dict=g["state_dict"], recipe=g.get("recipe") or {})
torch.save(ck, "runs/grayout/gray-bundled.pt")
PY
facepipe distill $I --augment wild,gray=1 --init runs/grayout/gray-bundled.pt --model-kwargs '{"widths": [40, 80, 160]}' \
    --epochs 40 --outside-photo ignore --out runs/grayout/ign
python3 -m facepipe.infer.pack runs/narrow/c96-c2 facepipe/assets/default.pt --gray runs/grayout/ign
# The same weights, their file now asking parse and eval to show the colour network the photo's colour along its
# edge where a crop reaches past the photo, instead of black (docs/results.md, "The backdrop's colour beyond the
# photo"; infer/photo_fill.py). Equivalently, add --beyond-photo-fill edge to the pack above.
python3 -m facepipe.infer.pack facepipe/assets/default.pt facepipe/assets/default.pt --gray facepipe/assets/default.pt \
    --beyond-photo-fill edge
# accurate, two more cycles (docs/results.md, "The teacher, a second cycle with `edge`"): the fill beyond each
# labelled photo left out of the loss where the photo ends in hair or skin (train --outside-photo edge), 700 epochs
# in all. The default above was distilled from the accurate.pt packed before these, so they come last.
E="--epochs 60 --lr 0.001 --backgrounds data/backgrounds --outside-photo edge -q"
facepipe train data/fasseg-hc-b2.0-t4.h5 --init accurate $E --out runs/tign/edge
facepipe train data/fasseg-hc-b2.0-t4.h5 --init runs/tign/edge $E --out runs/tign/edge-c2
python3 -m facepipe.infer.pack runs/tign/edge-c2 facepipe/assets/accurate.pt --fp16
# accurate on 384 px crops (docs/results.md, "The teacher's 96.5% / 0.92 goal"): the same faces cut at 384 px and
# one more 60-epoch cycle there from the 256 px accurate above; 760 epochs in all. Its checkpoint records the side,
# so `parse --model accurate` cuts 384 px crops.
facepipe align data/fasseg data/fasseg-hc-b2.0-t4-s384 --size 384 --landmarks data/fasseg-lmhc --box-width 2.0 \
    --turn-shift 4 -q
facepipe cache data/fasseg-hc-b2.0-t4-s384 data/fasseg-hc-b2.0-t4-s384.h5 -q
facepipe train data/fasseg-hc-b2.0-t4-s384.h5 --init runs/tign/edge-c2 $E --out runs/res/s384
python3 -m facepipe.infer.pack runs/res/s384 facepipe/assets/accurate.pt --fp16
