#!/usr/bin/env bash
# Train the shipped models (rc-en, rc-zh, chat) side by side on one GPU, export fp16, quick-evaluate.
# Usage: MINUTES=6 DEVICE=cuda:0 DATA=.gpu/data TOKENIZER=.gpu/tokenizer.model OUTDIR=/tmp/ck bash scripts/train_shipped.sh
# Data: python scripts/prepare_training_data.py (writes .gpu/data). Extra flags for every run: EXTRA="--max-steps 3".
set -u
MINUTES=${MINUTES:-6}
DEVICE=${DEVICE:-cuda:0}
DATA=${DATA:-.gpu/data}
TOKENIZER=${TOKENIZER:-.gpu/tokenizer.model}
OUTDIR=${OUTDIR:-/tmp/ck}
EXTRA=${EXTRA:-}
export PYTHONUNBUFFERED=1
mkdir -p "$OUTDIR"
common=(--preset base --tokenizer "$TOKENIZER" --max-minutes "$MINUTES" --device "$DEVICE" --eval-every 1000)

python -m model.train "${common[@]}" --task rc --train "$DATA/train-v1.1.json" --out "$OUTDIR/rc-en" \
  --hidden-size 512 --encoder-layers 3 --max-source-len 400 --batch-size 64 --learning-rate 1.5e-3 \
  --decode '{"beam_size": 5, "n_best": 3, "max_length": 30, "length_penalty": 0.0}' $EXTRA > "$OUTDIR/rc-en.log" 2>&1 &
python -m model.train "${common[@]}" --task rc --train "$DATA/cmrc2018_train.json" "$DATA/cmrc2018_trial.json" \
  --out "$OUTDIR/rc-zh" --hidden-size 384 --encoder-layers 3 --max-source-len 512 --batch-size 48 \
  --learning-rate 1.5e-3 \
  --decode '{"beam_size": 5, "n_best": 3, "max_length": 64, "length_penalty": 0.0}' $EXTRA > "$OUTDIR/rc-zh.log" 2>&1 &
python -m model.train "${common[@]}" --task chat --train "$DATA/dialogues_train.txt" "$DATA/lccc_train.jsonl" \
  "$DATA/toy_train.txt" "$DATA/chatterbot_corpus" "$DATA/chatterbot_corpus" "$DATA/chatterbot_corpus" \
  --out "$OUTDIR/chat" --hidden-size 512 --encoder-layers 2 --max-source-len 160 --batch-size 128 \
  --learning-rate 2e-3 \
  --decode '{"beam_size": 5, "n_best": 5, "max_length": 40, "length_penalty": 1.0, "no_repeat_ngram_size": 3}' \
  $EXTRA > "$OUTDIR/chat.log" 2>&1 &
wait

for name in rc-en rc-zh chat; do
  python scripts/export_checkpoint.py "$OUTDIR/$name" "$OUTDIR/ship/$name" || echo "export $name failed"
done
python - "$OUTDIR/ship" "$DATA" "$DEVICE" <<'PY'
import json, sys
from model.inference import ModelSet
from model.evaluation import evaluate_rc, evaluate_chat
ship, data, device = sys.argv[1:]
limit = int(__import__("os").environ.get("EVAL_LIMIT", "1500"))
for name, path in (("rc-en", "dev-public-v1.1.json"), ("rc-zh", "cmrc2018_dev-public.json")):
    try:
        r = evaluate_rc(ModelSet.load(f"{ship}/{name}", device), f"{data}/{path}", limit=limit)
        r.pop("predictions")
        print("EVAL", name, json.dumps(r))
    except Exception as e:
        print("EVAL", name, "failed", repr(e))
for path in ("dialogues_validation.txt", "lccc_heldout.jsonl"):
    try:
        print("EVAL chat", path, json.dumps(evaluate_chat(ModelSet.load(f"{ship}/chat", device), f"{data}/{path}", limit=limit)))
    except Exception as e:
        print("EVAL chat failed", repr(e))
PY
