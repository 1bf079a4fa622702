"""Code the multi-process storage tests run in each spawned process (importable, so `spawn` can find it).

Each function opens its own engine (never one inherited from the parent), waits at the barrier so the
processes really start together, and puts a dict of counts on the result queue, or {"error": ...} if it
raised, so the test fails at once instead of waiting for a result that never comes.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from storage import batch_jobs, migrate
from storage import conversations as conv
from storage.db import make_engine, transaction
from storage.limits import Limits

OWNER = "alice"
LIMITS = Limits(max_message_chars=100, max_question_chars=100, max_passage_chars=1000, max_batch_items=1000)


def _report(results: Queue[dict[str, Any]], work: Callable[[], dict[str, Any]]) -> None:
    try:
        results.put(work())
    except BaseException:
        results.put({"error": traceback.format_exc()})
        raise


def ensure_schema(url: str, barrier: Barrier, results: Queue[dict[str, Any]]) -> None:
    barrier.wait()
    _report(results, lambda: {"migrated": migrate.ensure_schema(url)})


def write_turns_and_answers(
    url: str,
    *,
    worker: int,
    rounds: int,
    conversation_ids: list[str],
    job_id: str,
    item_ids: list[int],
    barrier: Barrier,
    results: Queue[dict[str, Any]],
) -> None:
    """Send messages and save replies in every conversation, then answer every item of the job.

    Per round and conversation a worker sends one message of its own and one with a request id all workers
    share (a redelivered send), and saves the reply to both (the shared one is a redelivered save). Every
    worker answers every item: each item is one task delivered to all workers.
    """
    barrier.wait()
    _report(results, lambda: _write(url, worker, rounds, conversation_ids, job_id, item_ids))


def _write(
    url: str, worker: int, rounds: int, conversation_ids: list[str], job_id: str, item_ids: list[int]
) -> dict[str, Any]:
    engine = make_engine(url)
    counts = {"saved_replies": 0, "answered_items": 0, "finished_jobs": 0}
    try:
        for round_index in range(rounds):
            for conversation_id in conversation_ids:
                for request_id in (f"w{worker}-r{round_index}", f"shared-r{round_index}"):
                    with transaction(engine) as db:
                        turns = conv.add_user_turn(
                            db,
                            conversation_id=conversation_id,
                            owner=OWNER,
                            text=f"message {request_id}",
                            client_request_id=request_id,
                            limits=LIMITS,
                        )
                    with transaction(engine) as db:
                        history = conv.history_for(db, turn_id=turns.reply_turn_id, max_turns=4)
                        saved = conv.save_reply(
                            db,
                            turn_id=turns.reply_turn_id,
                            text=f"reply to {history[-1]}",
                            model_version=f"worker-{worker}",
                        )
                    counts["saved_replies"] += saved
        for item_id in item_ids:
            with transaction(engine) as db:
                answered = batch_jobs.record_item_answer(
                    db,
                    item_id=item_id,
                    answer=f"answer {item_id}",
                    score=-1.0,
                    model_version=f"worker-{worker}",
                )
                counts["answered_items"] += answered
                counts["finished_jobs"] += batch_jobs.finish_job_if_complete(db, job_id=job_id)
    finally:
        engine.dispose()
    return counts
