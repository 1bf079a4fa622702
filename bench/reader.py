"""Span-reader speed: questions/s of batched RC decoding at batch 1 (one at a time), 8, 32 and 64, and
single-question latency p50/p90, in-process, on real SQuAD-format questions. Prints JSON.

PYTHONPATH=. .venv/bin/python bench/reader.py [--checkpoint model/checkpoints/rc-en] [--data FILE]
    [--threads N] [--questions 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "squad" / "dev-public-v1.1.json"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)


def load_questions(path: Path, count: int) -> list[tuple[str, str]]:
    from model.readers import read_squad

    examples, _ = read_squad(path)
    if not examples:
        raise SystemExit(f"{path}: no questions")
    return [(e.question, e.passage) for e in (examples * (1 + count // len(examples)))[:count]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / "model" / "checkpoints" / "rc-en"))
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="SQuAD-format JSON the questions come from")
    parser.add_argument("--questions", type=int, default=256, help="questions decoded at every batch size")
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--latency-questions", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    parser.add_argument("--repeats", type=int, default=3, help="runs per batch size; the best is reported")
    args = parser.parse_args()

    import torch

    from model.inference import load_predictor

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    predictor = load_predictor(args.checkpoint, "cpu")
    questions = load_questions(Path(args.data), args.questions)
    predictor.answer(questions[:8])  # warm-up
    report: dict[str, Any] = {
        "model": predictor.version,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "questions": len(questions),
        "load_before": os.getloadavg(),
    }
    rows = []
    for size in [int(s) for s in args.batch_sizes.split(",")]:
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for start in range(0, len(questions), size):
                predictor.answer(questions[start : start + size])
            runs.append(len(questions) / (time.perf_counter() - started))
        rows.append(
            {"batch_size": size, "questions_per_s": round(max(runs), 1), "runs": [round(r, 1) for r in runs]}
        )
    report["throughput"] = rows
    times = []
    for question in questions[: args.latency_questions]:
        started = time.perf_counter()
        predictor.answer([question])
        times.append((time.perf_counter() - started) * 1000)
    report["single_question"] = {
        "p50_ms": percentile(times, 0.5),
        "p90_ms": percentile(times, 0.9),
        "mean_ms": round(statistics.mean(times), 2),
        "count": len(times),
    }
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
