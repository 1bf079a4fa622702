"""Chat reply latency through the queue with the shipped decoding: a lone user's messages, one at a time (store
the turn, enqueue, a worker decodes and stores the reply, the client gets it), per language. Prints JSON.

    PYTHONPATH=. .venv/bin/python bench/chat_latency.py [--checkpoint model/checkpoints] [--rounds 3]

Starts one worker (S2S_TORCH_THREADS=1) against Redis (127.0.0.1:6379 on an empty DB number, else a private
one) and a temporary SQLite file. The messages are the chat probes (docs/probes/chat_probes.jsonl), each in a
new conversation; every message is sent once untimed first (the worker's first decode of a shape pays oneDNN's
one-time setup). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.bench_queue import bench_service, percentile  # noqa: E402


def send(engine: Any, text: str) -> tuple[float, dict[str, Any]]:
    """(milliseconds from storing the message to holding the reply, the reply's outcome)."""
    from flows import chat
    from storage import conversations
    from storage.db import transaction
    from workers import client

    started = time.perf_counter()
    with transaction(engine) as db:
        conversation = conversations.create_conversation(db, owner="bench", title=text[:40])
        turns = conversations.add_user_turn(db, conversation_id=conversation.id, owner="bench", text=text)
    client.enqueue_reply(turns.reply_turn_id)
    outcome = chat.wait(lambda: engine, turns.reply_turn_id, timeout=120)
    return (time.perf_counter() - started) * 1000, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / "model" / "checkpoints"))
    parser.add_argument("--probes", default=str(REPO_ROOT / "docs" / "probes" / "chat_probes.jsonl"))
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the messages")
    args = parser.parse_args()

    from model.language import detect_language
    from tests.workers.service_fixtures import service_env, start_worker, stop_worker

    messages = [
        json.loads(line)["history"][-1] for line in Path(args.probes).read_text("utf-8").splitlines() if line
    ]
    times: dict[str, list[float]] = {}
    versions: set[str] = set()
    with bench_service() as service:
        worker = start_worker(
            service_env(
                service.redis_url,
                service.database_url,
                S2S_CHECKPOINT=args.checkpoint,
                S2S_LOG_LEVEL="WARNING",
            ),
            service.tmp / "worker.log",
            name="chatbench@%h",
        )
        try:
            for text in messages:  # untimed
                send(service.engine, text)
            for _ in range(args.rounds):
                for text in messages:
                    elapsed, outcome = send(service.engine, text)
                    if outcome["status"] != "done":
                        raise SystemExit(f"reply failed: {outcome}")
                    versions.add(str(outcome["model_version"]))
                    times.setdefault(detect_language(text), []).append(elapsed)
        finally:
            stop_worker(worker)
    report = {
        "checkpoint": args.checkpoint,
        "cpus": os.cpu_count(),
        "model_versions": sorted(versions),
        **{
            language: {
                "replies": len(values),
                "p50_ms": round(percentile(values, 0.5), 1),
                "p90_ms": round(percentile(values, 0.9), 1),
            }
            for language, values in sorted(times.items())
        },
    }
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
