"""Reading comprehension: one question about a passage, answered through the interactive queue.

`ask` = check the texts and that a worker is online, `store` the passage (reused by hash) and a pending
question, then enqueue it or mark it failed. The answer is read back from the database (`result`), or waited
for by reading the row when the worker says it has ended (`wait`, or `ask_and_wait`, which listens before it
enqueues); `stop` cancels a question still pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flows import waiting
from flows.queueing import EngineSource, enqueue_or_fail
from settings import get_settings
from storage import questions, quotas
from storage.db import read_transaction, transaction
from storage.limits import Limits, check_text
from workers import client


@dataclass(frozen=True)
class AskedQuestion:
    question_id: str
    task_id: str


def check(passage: str, question: str) -> None:
    """EmptyInput / InputTooLong / UnstorableText unless both texts are within the configured bounds."""
    limits = Limits.from_settings(get_settings())
    check_text(passage, limit=limits.max_passage_chars, field="passage")
    check_text(question, limit=limits.max_question_chars, field="question")


def store(engine: EngineSource, owner: str, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Store (question, passage) pairs as pending questions in one transaction, each passage once; their ids.

    Nothing is enqueued: `ask` does that, and a benchmark times it on its own."""
    for question, passage in pairs:
        check(passage, question)
    return _store(engine, owner, pairs)


def _store(engine: EngineSource, owner: str, pairs: Sequence[tuple[str, str]]) -> list[str]:
    limits = Limits.from_settings(get_settings())
    with transaction(engine()) as db:
        passage_ids = {
            passage: questions.upsert_passage(db, text=passage, limits=limits)
            for passage in {p for _, p in pairs}
        }
        return [
            questions.create_question(
                db, owner=owner, passage_id=passage_ids[passage], question=question, limits=limits
            ).id
            for question, passage in pairs
        ]


def ask(engine: EngineSource, owner: str, passage: str, question: str) -> AskedQuestion:
    """Store the pending question and enqueue it; if enqueueing raises, the question is failed first."""
    question_id = _check_and_store(engine, owner, passage, question)
    return AskedQuestion(question_id=question_id, task_id=enqueue(engine, question_id))


def ask_and_wait(
    engine: EngineSource, owner: str, passage: str, question: str, *, timeout: float
) -> tuple[AskedQuestion, dict[str, Any]]:
    """`ask`, then `wait` for the answer, listening for the worker's notice before the question is enqueued."""
    question_id = _check_and_store(engine, owner, passage, question)
    with waiting.watching(waiting.QUESTION, question_id) as watch:
        task_id = enqueue(engine, question_id)
        outcome = wait(engine, question_id, timeout=timeout, watch=watch)
    return AskedQuestion(question_id=question_id, task_id=task_id), outcome


def _check_and_store(engine: EngineSource, owner: str, passage: str, question: str) -> str:
    check(passage, question)
    client.require_worker(client.INTERACTIVE_QUEUE)
    with read_transaction(engine()) as db:
        quotas.check_quota(db, owner=owner, quota=quotas.Quota.from_settings(get_settings()))
    [question_id] = _store(engine, owner, [(question, passage)])
    return question_id


def enqueue(engine: EngineSource, question_id: str) -> str:
    """Enqueue a stored pending question (its task id); if that raises, the question is failed first."""
    return enqueue_or_fail(
        engine,
        lambda: client.enqueue_question(question_id),
        lambda db, error: questions.fail_question(db, question_id=question_id, error=error),
    )


def wait(
    engine: EngineSource, question_id: str, *, timeout: float, watch: waiting.Watch | None = None
) -> dict[str, Any]:
    """Block until the question is answered, failed or cancelled, reading its row when the worker says so:
    {"question_id", "status", "answer", "score", "span", "n_best", "model_version", "latency_ms", "error"};
    workers.client.ResultTimeout after `timeout` seconds. `watch`: one entered (waiting.watching) before the
    question was enqueued."""
    return waiting.wait_for(
        engine,
        waiting.QUESTION,
        question_id,
        lambda db: questions.question_outcome(db, question_id=question_id),
        timeout=timeout,
        watch=watch,
    )


def stop(engine: EngineSource, owner: str, question_id: str) -> bool:
    """Cancel a pending question (the user stopped it); False if it had already been answered or failed.

    A worker that takes it afterwards finds it no longer pending and skips it; nothing is revoked."""
    with transaction(engine()) as db:
        return questions.cancel_question(db, question_id=question_id, owner=owner)


def result(engine: EngineSource, owner: str, question_id: str) -> dict[str, Any]:
    """The question's state; once done also answer, score, n_best, attention, passage and model_version."""
    with read_transaction(engine()) as db:
        row = questions.get_question(db, question_id=question_id, owner=owner)
        return {
            "question_id": row.id,
            "status": row.status.value,
            "question": row.question,
            "passage": row.passage.text,
            "answer": row.answer,
            "score": row.score,
            "n_best": list(row.n_best or []),
            "attention": dict(row.attention or {}),
            "model_version": row.model_version,
            "error": row.error,
        }
