"""Load: simulated chat users and a batch job at the same time, then an exactly-once check in the database.

Loopback only: a Redis (127.0.0.1:6379 on an empty DB number, else a private one) and a temporary SQLite file
(bench_queue.bench_service), and `--workers` real `s2s worker` processes. Each user is a thread with its own
owner and conversation that sends a message through the chat flow (flows.chat: store, enqueue, wait for the
stored reply, what `s2s chat` and the UI run), waits `--think-ms`, and sends the next, for `--seconds`. A
batch job of `--items` items is submitted through the batch flow when the users start. When the time is up the
users stop sending and every reply and item is waited for (`--drain-s`), and then the database is read:

- every message a user sent is stored once, with exactly one reply, done, with text;
- every item of the job is stored once and answered once (done, with an answer).

Prints one JSON object: users, seconds, chat requests, requests/s, chat latency p50/p95/p99 (ms, from sending
to the stored reply), batch items/s, and the counts of lost and duplicated records (which must be 0).

The CI variant is tests/workers/test_load.py (a few users, about 30 s, the tiny checkpoint). The full run:

    OMP_NUM_THREADS=1 python bench/load.py --users 32 --seconds 300 --items 2500 --checkpoint model/checkpoints
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.bench_queue import bench_service, percentile  # noqa: E402

MESSAGES = [
    "hello there",
    "how are you today?",
    "what do you like to do on weekends?",
    "tell me about your job",
    "do you like music?",
    "where did you grow up?",
    "我今天很开心",
    "你喜欢看电影吗？",
]
PASSAGE = "Bob was born in Oslo. He lives in Paris and works as a baker near the river."
QUESTION = "Where was Bob born?"


@dataclass
class UserStats:
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    timed_out: list[int] = field(default_factory=list)  # reply turn ids still pending at their wait's end
    errors: list[str] = field(default_factory=list)


def run_user(
    engine_source: Any,
    index: int,
    stop: threading.Event,
    stats: UserStats,
    *,
    think_s: float,
    reply_timeout_s: float,
) -> None:
    from flows import chat
    from workers.client import ResultTimeout

    owner = f"anon:load-user-{index:03d}-{os.getpid()}"
    conversation_id = None
    turn = 0
    while not stop.is_set():
        text = f"{MESSAGES[(index + turn) % len(MESSAGES)]} ({index}.{turn})"
        started = time.perf_counter()
        try:
            sent = chat.send(engine_source, owner, conversation_id, text)
        except Exception as error:  # refused before it was stored: counted, never retried
            stats.errors.append(f"{type(error).__name__}: {error}")
            time.sleep(0.5)
            continue
        stats.sent += 1
        conversation_id = sent.conversation_id
        try:
            outcome = chat.wait(engine_source, sent.reply_turn_id, timeout=reply_timeout_s)
        except ResultTimeout:
            stats.timed_out.append(sent.reply_turn_id)
            continue
        if outcome["status"] == "done":
            stats.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        else:
            stats.failed += 1
        turn += 1
        if think_s:
            stop.wait(think_s)


def submit_job(engine_source: Any, items: int) -> str:
    from flows import batch

    lines = [
        json.dumps({"id": f"item-{i}", "question": QUESTION, "passage": f"{PASSAGE} Item {i}."})
        for i in range(items)
    ]
    parsed = batch.parse_upload(("\n".join(lines) + "\n").encode(), "load.jsonl")
    return batch.submit(engine_source, f"anon:load-batch-{os.getpid()}", parsed, "load.jsonl").job_id


def count_records(engine: Any, job_id: str) -> dict[str, Any]:
    """What the database holds: messages, their replies, and the job's items, as exactly-once counts."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import aliased

    from storage.db import transaction
    from storage.models import Conversation, ItemStatus, QAJobItem, Role, Turn, TurnStatus

    reply = aliased(Turn)
    with transaction(engine) as db:
        users = Conversation.owner.like("anon:load-user-%")
        messages = (
            db.scalar(
                select(func.count()).select_from(Turn).join(Conversation).where(users, Turn.role == Role.USER)
            )
            or 0
        )
        replies = (
            db.scalar(
                select(func.count())
                .select_from(Turn)
                .join(Conversation)
                .where(users, Turn.role == Role.ASSISTANT)
            )
            or 0
        )
        answered = (
            db.scalar(
                select(func.count())
                .select_from(Turn)
                .join(Conversation)
                .join(
                    reply,
                    (reply.conversation_id == Turn.conversation_id) & (reply.position == Turn.position + 1),
                )
                .where(
                    users,
                    Turn.role == Role.USER,
                    reply.role == Role.ASSISTANT,
                    reply.status == TurnStatus.DONE,
                    reply.text.is_not(None),
                )
            )
            or 0
        )
        statuses = dict(
            db.execute(
                select(QAJobItem.status, func.count())
                .where(QAJobItem.job_id == job_id)
                .group_by(QAJobItem.status)
            ).all()
        )
        keys = db.scalar(
            select(func.count(func.distinct(QAJobItem.item_key))).where(QAJobItem.job_id == job_id)
        )
        with_answer = (
            db.scalar(
                select(func.count())
                .select_from(QAJobItem)
                .where(
                    QAJobItem.job_id == job_id,
                    QAJobItem.status == ItemStatus.DONE,
                    QAJobItem.answer.is_not(None),
                )
            )
            or 0
        )
    return {
        "messages": int(messages),
        "replies": int(replies),
        "messages_with_one_done_reply": int(answered),
        "items": {str(status): int(count) for status, count in statuses.items()},
        "distinct_item_keys": keys,
        "items_with_an_answer": int(with_answer),
    }


def wait_until_settled(engine: Any, job_id: str, *, timeout_s: float) -> float:
    """Seconds until no load reply and no job item is pending (or the timeout)."""
    from sqlalchemy import func, select

    from storage.db import transaction
    from storage.models import Conversation, ItemStatus, QAJobItem, Turn, TurnStatus

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with transaction(engine) as db:
            pending = (
                db.scalar(
                    select(func.count())
                    .select_from(Turn)
                    .join(Conversation)
                    .where(Conversation.owner.like("anon:load-user-%"), Turn.status == TurnStatus.PENDING)
                )
                or 0
            ) + (
                db.scalar(
                    select(func.count())
                    .select_from(QAJobItem)
                    .where(QAJobItem.job_id == job_id, QAJobItem.status == ItemStatus.PENDING)
                )
                or 0
            )
        if not pending:
            break
        time.sleep(0.25)
    return time.monotonic() - started


@contextmanager
def service_with_workers(checkpoint: str, workers: int, device: str) -> Iterator[Any]:
    from tests.workers.service_fixtures import service_env, start_worker, stop_worker

    with bench_service() as service:
        env = service_env(
            service.redis_url,
            service.database_url,
            S2S_CHECKPOINT=checkpoint,
            S2S_LOG_LEVEL="WARNING",
            S2S_DEVICE=device,
        )
        started = []
        try:
            for number in range(workers):
                started.append(
                    start_worker(
                        env, service.tmp / f"worker{number}.log", name=f"load{number}@%h", wait_s=300
                    )
                )
            yield service
        finally:
            for process in started:
                stop_worker(process)


def watch_job(engine: Any, job_id: str, started: float, finished: list[float], timeout_s: float) -> None:
    """Append to `finished` the seconds since `started` at which the job first had no pending item."""
    from sqlalchemy import func, select

    from storage.db import transaction
    from storage.models import ItemStatus, QAJobItem

    while time.perf_counter() - started < timeout_s:
        with transaction(engine) as db:
            pending = db.scalar(
                select(func.count())
                .select_from(QAJobItem)
                .where(QAJobItem.job_id == job_id, QAJobItem.status == ItemStatus.PENDING)
            )
        if not pending:
            finished.append(time.perf_counter() - started)
            return
        time.sleep(0.5)


def run_load(
    service: Any,
    *,
    users: int,
    seconds: float,
    items: int,
    think_ms: float = 0.0,
    reply_timeout_s: float = 120.0,
    drain_s: float = 600.0,
) -> dict[str, Any]:
    """The load on a running service (bench_service with workers); the report, with the exactly-once check."""
    engine = service.engine

    def engine_source() -> Any:
        return engine

    stop = threading.Event()
    stats = [UserStats() for _ in range(users)]
    job_id = submit_job(engine_source, items)
    started = time.perf_counter()
    threads = [
        threading.Thread(
            target=run_user,
            args=(engine_source, i, stop, stats[i]),
            kwargs={"think_s": think_ms / 1000.0, "reply_timeout_s": reply_timeout_s},
            daemon=True,
        )
        for i in range(users)
    ]
    for thread in threads:
        thread.start()
    job_finished: list[float] = []  # seconds from the start until the job had no pending item
    watcher = threading.Thread(
        target=watch_job, args=(engine, job_id, started, job_finished, seconds + drain_s), daemon=True
    )
    watcher.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=reply_timeout_s + 30)
    load_s = time.perf_counter() - started
    drained_s = wait_until_settled(engine, job_id, timeout_s=drain_s)
    watcher.join(timeout=5)
    job_s = job_finished[0] if job_finished else load_s + drained_s
    counts = count_records(engine, job_id)
    latencies = sorted(ms for user in stats for ms in user.latencies_ms)
    sent = sum(user.sent for user in stats)
    done_items = counts["items"].get("done", 0)
    # lost: messages sent but not stored, stored without a done reply, items not answered; duplicated: more
    # messages, replies or items stored than were sent
    lost = (
        max(0, sent - counts["messages"])
        + (counts["messages"] - counts["messages_with_one_done_reply"])
        + (items - done_items)
    )
    duplicated = (
        max(0, counts["messages"] - sent)
        + max(0, counts["replies"] - counts["messages"])
        + max(0, sum(counts["items"].values()) - items)
    )
    return {
        "users": users,
        "seconds": round(load_s, 1),
        "chat_requests": sent,
        "chat_replies_in_time": len(latencies),
        "chat_requests_per_s": round(len(latencies) / load_s, 2),
        "chat_latency_ms": {
            "p50": round(percentile(latencies, 0.50), 1),
            "p95": round(percentile(latencies, 0.95), 1),
            "p99": round(percentile(latencies, 0.99), 1),
        }
        if latencies
        else None,
        "chat_failed": sum(user.failed for user in stats),
        "chat_timed_out": sum(len(user.timed_out) for user in stats),
        "chat_refused_before_storing": sum(len(user.errors) for user in stats),
        "batch_items": items,
        "batch_items_done_during_load_or_drain": done_items,
        "batch_job_s": round(job_s, 1),
        "batch_items_per_s": round(done_items / job_s, 2) if job_s else None,
        "drain_s": round(drained_s, 1),
        "database": counts,
        "lost": lost,
        "duplicated": duplicated,
        "exactly_once": lost == 0
        and duplicated == 0
        and counts["items_with_an_answer"] == items
        and counts["distinct_item_keys"] == items,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_checkpoint = REPO_ROOT / "model" / "checkpoints"
    parser.add_argument(
        "--checkpoint", default=str(default_checkpoint), help="checkpoint dir (or models.json dir)"
    )
    parser.add_argument("--users", type=int, default=32, help="simulated chat users")
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the users send")
    parser.add_argument("--items", type=int, default=2500, help="items in the batch job sent at the start")
    parser.add_argument(
        "--think-ms", type=float, default=0.0, help="each user's pause between a reply and its next"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--device", default=os.environ.get("S2S_DEVICE", "cpu"))
    parser.add_argument(
        "--drain-s", type=float, default=1800.0, help="longest wait for the job after the load"
    )
    parser.add_argument(
        "--owner-rate",
        type=int,
        default=0,
        help="S2S_OWNER_REQUESTS_PER_MINUTE for the simulated users (default 0: off; a user "
        "with no think time sends faster than a person would)",
    )
    args = parser.parse_args()
    os.environ["S2S_OWNER_REQUESTS_PER_MINUTE"] = str(args.owner_rate)
    with service_with_workers(args.checkpoint, args.workers, args.device) as service:
        report = run_load(
            service,
            users=args.users,
            seconds=args.seconds,
            items=args.items,
            think_ms=args.think_ms,
            drain_s=args.drain_s,
        )
    report.update(
        checkpoint=args.checkpoint,
        workers=args.workers,
        device=args.device,
        cpus=os.cpu_count(),
        owner_requests_per_minute=args.owner_rate,
    )
    print(json.dumps(report, indent=2))
    return 0 if report["exactly_once"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
