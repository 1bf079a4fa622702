"""Answer the hand-written RC probes (docs/probes/rc_probes.jsonl) with a model set and print one JSON line per
probe (question, expected, answer, score) and a last line with the count answered exactly or by overlap.

Usage: python scripts/rc_probes.py [--checkpoint model/checkpoints] [--probes FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.inference import ModelSet  # noqa: E402
from model.metrics import cmrc_f1, f1  # noqa: E402
from model.readers import has_cjk  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=str(ROOT / "model" / "checkpoints"))
    parser.add_argument("--probes", default=str(ROOT / "docs" / "probes" / "rc_probes.jsonl"))
    args = parser.parse_args()
    probes = [json.loads(line) for line in Path(args.probes).read_text(encoding="utf-8").splitlines() if line]
    models = ModelSet.load(args.checkpoint, "cpu")
    answers = models.answer([(p["question"], p["passage"]) for p in probes])
    right = 0
    for probe, hyps in zip(probes, answers):
        answer = hyps[0].text if hyps else ""
        overlap = (cmrc_f1 if has_cjk(probe["question"]) else f1)(answer, [probe["answer"]])
        right += overlap >= 0.5
        print(  # noqa: T201
            json.dumps(
                {
                    "question": probe["question"],
                    "expected": probe["answer"],
                    "answer": answer,
                    "f1": round(overlap, 2),
                    "score": round(hyps[0].score, 3) if hyps else None,
                },
                ensure_ascii=False,
            )
        )
    print(json.dumps({"probes": len(probes), "answered_f1_at_least_0.5": right}))  # noqa: T201


if __name__ == "__main__":
    main()
