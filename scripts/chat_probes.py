"""Reply to the hand-written chat openers (docs/probes/chat_probes.jsonl: 10 English, 10 Chinese) with a model
set's shipped decoding and print one JSON line per probe (history, reply, model version): read them and judge
each as a user would (grammatical, on topic, in the right language).

Usage: python scripts/chat_probes.py [--checkpoint model/checkpoints] [--probes FILE] [--decode JSON]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.inference import ModelSet  # noqa: E402
from model.language import detect_language  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=str(ROOT / "model" / "checkpoints"))
    parser.add_argument("--probes", default=str(ROOT / "docs" / "probes" / "chat_probes.jsonl"))
    parser.add_argument(
        "--decode", type=json.loads, default=None, help="decoding settings over the shipped ones"
    )
    args = parser.parse_args()
    probes = [json.loads(line) for line in Path(args.probes).read_text(encoding="utf-8").splitlines() if line]
    models = ModelSet.load(args.checkpoint, "cpu")
    for probe in probes:
        history = probe["history"]
        predictor = models.predictor_for("chat", detect_language(history[-1]))
        decode = predictor.default_decode.with_request(args.decode) if args.decode else None
        hyps = predictor.reply([history], decode)[0]
        print(  # noqa: T201
            json.dumps(
                {
                    "history": history,
                    "reply": hyps[0].text if hyps else "",
                    "model": predictor.version,
                },
                ensure_ascii=False,
            )
        )


if __name__ == "__main__":
    main()
