"""Passages and the questions asked about them one at a time (the interactive reading-comprehension requests).

UI side (owner-scoped; another owner's rows raise `NotFound`): create_question, get_question, cancel_question.
`upsert_passage` (and `upsert_passages`, which batch jobs use) is shared by content: a passage id is only
reachable through the text itself or an owner's question or job.
Worker side (by ids the service enqueued): question_input, save_answer, fail_question; question_outcome (what a
waiting caller reads, whatever the state); pending_question_ids.

Every function takes the Session `db` first and keyword arguments after it, and never commits. Writes a
redelivered task may repeat only touch rows that are still pending (guarded UPDATEs), so they report False and
change nothing the second time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.db import finish_pending
from storage.errors import NotFound
from storage.limits import DEFAULT_LIMITS, Limits, check_owner, check_text
from storage.models import MODEL_VERSION_MAX_CHARS, Passage, Question, QuestionStatus, utcnow
from storage.ownership import get_owned

_IN_CHUNK = 500  # ids per IN (...) list, well under SQLite's bound-parameter limit


@dataclass(frozen=True)
class QAInput:
    """What the model needs for one question: the question and its passage text."""

    question: str
    passage: str


# --- passages ---------------------------------------------------------------------------------------------


def passage_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def upsert_passage(db: Session, *, text: str, limits: Limits = DEFAULT_LIMITS) -> int:
    """The id of the passage with this exact text, storing it first if it is new."""
    check_text(text, limit=limits.max_passage_chars, field="passage")
    digest = passage_hash(text)
    return upsert_passages(db, {digest: text})[digest]


def upsert_passages(db: Session, texts_by_hash: Mapping[str, str]) -> dict[str, int]:
    """The ids of these passages ({sha256: text}), by hash, storing the new ones first (unchecked: the caller
    has checked the texts)."""
    # INSERT .. ON CONFLICT DO NOTHING, then read the ids back: safe when two writers store the same text at once.
    dialect = db.get_bind().dialect.name
    statement: Executable
    if dialect == "postgresql":
        statement = postgresql.insert(Passage).on_conflict_do_nothing(index_elements=[Passage.sha256])
    elif dialect == "sqlite":
        statement = sqlite.insert(Passage).on_conflict_do_nothing(index_elements=[Passage.sha256])
    else:
        raise NotImplementedError(f"storage supports sqlite and postgresql, not {dialect}")
    now = utcnow()
    rows = [{"sha256": digest, "text": text, "created_at": now} for digest, text in texts_by_hash.items()]
    db.execute(statement, rows)
    ids: dict[str, int] = {}
    digests = list(texts_by_hash)
    for start in range(0, len(digests), _IN_CHUNK):
        chunk = digests[start : start + _IN_CHUNK]
        query = select(Passage.sha256, Passage.id).where(Passage.sha256.in_(chunk))
        ids.update((digest, passage_id) for digest, passage_id in db.execute(query))
    return ids


# --- questions --------------------------------------------------------------------------------------------


def create_question(
    db: Session, *, owner: str, passage_id: int, question: str, limits: Limits = DEFAULT_LIMITS
) -> Question:
    """A pending question about a stored passage; enqueue its id after commit."""
    check_owner(owner)
    check_text(question, limit=limits.max_question_chars, field="question")
    if db.get(Passage, passage_id) is None:
        raise NotFound("passage", passage_id)
    row = Question(owner=owner, passage_id=passage_id, question=question, status=QuestionStatus.PENDING)
    db.add(row)
    db.flush()
    return row


def get_question(db: Session, *, question_id: str, owner: str) -> Question:
    return get_owned(db, Question, kind="question", row_id=question_id, owner=owner)


# Built once: constructing this select costs more than running it (about 0.2 ms of a 0.5 ms read on SQLite),
# and it runs for every interactive question a worker answers.
_QUESTION_INPUT = (
    select(Question.status, Question.question, Passage.text)
    .join(Question.passage)
    .where(Question.id == bindparam("question_id"))
)


def question_input(db: Session, *, question_id: str) -> QAInput | None:
    """Worker side: the question and passage to decode, or None if the question is no longer pending."""
    row = db.execute(_QUESTION_INPUT, {"question_id": question_id}).one_or_none()
    if row is None:
        raise NotFound("question", question_id)
    status, question, passage = row
    return QAInput(question=question, passage=passage) if status is QuestionStatus.PENDING else None


def save_answer(
    db: Session,
    *,
    question_id: str,
    answer: str,
    score: float,
    model_version: str,
    n_best: list[dict[str, Any]] | None = None,
    attention: dict[str, Any] | None = None,
    decoding: dict[str, Any] | None = None,
    latency_ms: float | None = None,
) -> bool:
    """Worker side: store the answer if the question is still pending; False (and no write) otherwise."""
    check_text(model_version, limit=MODEL_VERSION_MAX_CHARS, field="model_version")
    values = {
        "status": QuestionStatus.DONE,
        "answer": answer,
        "score": score,
        "model_version": model_version,
        "n_best": n_best,
        "attention": attention,
        "decoding": decoding,
        "latency_ms": latency_ms,
        "finished_at": utcnow(),
    }
    return finish_pending(db, Question, row_id=question_id, values=values)


def fail_question(db: Session, *, question_id: str, error: str) -> bool:
    """Worker side: mark a pending question failed; False if it was not pending."""
    values = {"status": QuestionStatus.FAILED, "error": error, "finished_at": utcnow()}
    return finish_pending(db, Question, row_id=question_id, values=values)


def cancel_question(db: Session, *, question_id: str, owner: str) -> bool:
    """Mark a pending question cancelled (the user stopped it); False if it had already been answered or failed.

    A worker that takes it afterwards skips it (question_input returns None), and one decoding it now cannot
    store its answer (save_answer only writes a pending question)."""
    get_question(db, question_id=question_id, owner=owner)
    values = {"status": QuestionStatus.CANCELLED, "error": "stopped by the user", "finished_at": utcnow()}
    return finish_pending(db, Question, row_id=question_id, values=values)


def pending_question_ids(db: Session) -> list[str]:
    """Worker side: ids of every question still pending, oldest first (the sweeper looks for lost messages)."""
    query = select(Question.id).where(Question.status == QuestionStatus.PENDING)
    return list(db.scalars(query.order_by(Question.created_at, Question.id)))


def question_outcome(db: Session, *, question_id: str) -> dict[str, Any]:
    """What a waiting caller needs about a question, whatever its state."""
    row = db.get(Question, question_id)
    if row is None:
        raise NotFound("question", question_id)
    return question_outcome_of(
        question_id=row.id,
        status=row.status,
        answer=row.answer,
        score=row.score,
        span=(row.attention or {}).get("span"),
        n_best=row.n_best,
        model_version=row.model_version,
        latency_ms=row.latency_ms,
        error=row.error,
    )


def question_outcome_of(
    *,
    question_id: str,
    status: QuestionStatus,
    answer: str | None,
    score: float | None,
    span: Any,
    n_best: list[dict[str, Any]] | None,
    model_version: str | None,
    latency_ms: float | None,
    error: str | None = None,
) -> dict[str, Any]:
    """question_outcome from the values themselves: a task that has just stored them need not read them back."""
    return {
        "question_id": question_id,
        "status": status.value,
        "answer": answer,
        "score": score,
        "span": span,
        "n_best": [{"text": h.get("text"), "score": h.get("score")} for h in (n_best or [])],
        "model_version": model_version,
        "latency_ms": latency_ms,
        "error": error,
    }
