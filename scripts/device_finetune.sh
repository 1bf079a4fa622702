#!/usr/bin/env bash
# One lent-GPU session in one command: fine-tune shipped models from their committed weights, export them in
# fp16, evaluate them, and leave the results in $OUT as files under 16 MiB (the device tool's limit).
#
# Here, before the session (the device machine sees only the repository and the paths named in `carry`):
#   python scripts/prepare_training_data.py && tar cJf .gpu/data.tar.xz -C .gpu data
# There (run tool, carry [".gpu/data.tar.xz"]; MINUTES of training, the runs share the GPU side by side):
#   MINUTES=9 MODELS="rc-en rc-zh" bash scripts/device_finetune.sh
# Back here, for each model:  cat <files_at>/rc-en.model.pt.part-* > model/checkpoints/rc-en/model.pt
# then `s2s eval` on CPU as the model card says, and update the card. Commit a checkpoint once per session:
# every replacement stays in the repository's history.
# A dry run on CPU: PYTHON=.venv/bin/python DEVICE=cpu EXTRA="--max-steps 2" EVAL_LIMIT=20 OUT=/tmp/out bash scripts/device_finetune.sh
set -u
MINUTES=${MINUTES:-9}
MODELS=${MODELS:-"rc-en rc-zh"}
DEVICE=${DEVICE:-cuda:0}
OUT=${OUT:?set OUT (the device tool sets it)}
WORK=${WORK:-/tmp/finetune}
EVAL_LIMIT=${EVAL_LIMIT:-2000}
EXTRA=${EXTRA:-}
PYTHON=${PYTHON:-python}  # the GPU image's python has torch; here: PYTHON=.venv/bin/python
DATA=.gpu/data
export PYTHONUNBUFFERED=1
[ -d "$DATA" ] || tar xJf .gpu/data.tar.xz -C .gpu
mkdir -p "$WORK/logs" "$OUT"

train_args() {  # the data and settings of each shipped model (see its MODEL_CARD.md)
  case "$1" in
    rc-en) echo --task rc --train "$DATA/train-v1.1.json" --max-source-len 400 --batch-size 64 \
             --learning-rate 1e-3 ;;
    rc-zh) echo --task rc --train "$DATA/cmrc2018_train.json" "$DATA/cmrc2018_trial.json" --max-source-len 512 \
             --batch-size 48 --learning-rate 1e-3 ;;
    chat) echo --task chat --train "$DATA/dialogues_train.txt" "$DATA/lccc_train.jsonl" "$DATA/toy_train.txt" \
            "$DATA/chatterbot_persona" "$DATA/chatterbot_persona" --max-source-len 160 --batch-size 128 \
            --learning-rate 1e-3 ;;
    *) echo "unknown model $1" >&2; exit 2 ;;
  esac
}

for name in $MODELS; do
  # shellcheck disable=SC2046  # train_args prints separate words on purpose
  "$PYTHON" -m model.train --preset base --init-from "model/checkpoints/$name" --device "$DEVICE" \
    --max-minutes "$MINUTES" --eval-every 500 --out "$WORK/$name" $(train_args "$name") $EXTRA \
    > "$WORK/logs/$name-train.log" 2>&1 &
done
wait

decode_of() {  # the decoding each model card states (a fine-tune from --init-from would store train's default)
  case "$1" in
    rc-en) echo '{"beam_size": 5, "n_best": 3, "max_length": 30, "length_penalty": 0.0}' ;;
    rc-zh) echo '{"beam_size": 5, "n_best": 3, "max_length": 64, "length_penalty": 0.0}' ;;
    chat) echo '{"beam_size": 10, "n_best": 3, "max_length": 40, "min_length": 3, "length_penalty": 1.0,
                 "no_repeat_ngram_size": 3, "mmi_weight": 0.95}' ;;
  esac
}

for name in $MODELS; do
  "$PYTHON" scripts/export_checkpoint.py "$WORK/$name" "$WORK/ship/$name" --decode "$(decode_of "$name")" \
    >> "$WORK/logs/export.log" 2>&1 \
    || echo "export $name failed" >> "$WORK/logs/export.log"
  cp "$WORK/$name/train_log.json" "$WORK/logs/$name-train_log.json" 2>/dev/null
  [ "$name" = chat ] && cp model/checkpoints/chat/decode.json "$WORK/ship/chat/"  # evaluated as shipped
  [ -f "$WORK/ship/$name/model.pt" ] && split -b 15M "$WORK/ship/$name/model.pt" "$OUT/$name.model.pt.part-"
done

"$PYTHON" - "$WORK/ship" "$DATA" "$DEVICE" "$EVAL_LIMIT" "$MODELS" > "$WORK/logs/eval.jsonl" 2>> "$WORK/logs/eval.err" <<'PY'
import json, sys
from model.evaluation import evaluate_chat, evaluate_rc
from model.inference import ModelSet
ship, data, device, limit, names = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split()
files = {"rc-en": ["dev-public-v1.1.json"], "rc-zh": ["cmrc2018_dev-public.json"],
         "chat": ["dialogues_validation.txt", "lccc_heldout.jsonl"]}
for name in names:
    for path in files[name]:
        try:
            models = ModelSet.load(f"{ship}/{name}", device)
            if name == "chat":
                result = evaluate_chat(models, f"{data}/{path}", limit=limit)
            else:
                result = evaluate_rc(models, f"{data}/{path}", limit=limit)
                result.pop("predictions", None)
            print(json.dumps({"model": name, "data": path, "limit": limit, **result}), flush=True)
        except Exception as error:  # one failed evaluation must not lose the trained weights
            print(json.dumps({"model": name, "data": path, "error": repr(error)}), flush=True)
PY
tar czf "$OUT/logs.tar.gz" -C "$WORK" logs
cat "$WORK/logs/eval.jsonl"
ls -la "$OUT"
