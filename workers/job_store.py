"""Small worker-side queries storage/ does not offer (yet): item ids of a job, job status, task outcomes.

Kept apart from storage/ on purpose (another package owns it): every function follows its conventions
(`db` first, keyword-only arguments, no commit) and uses its models and `update_rows`, so these can move into
storage/qa.py unchanged.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db import update_rows
from storage.errors import NotFound
from storage.models import (
    ItemStatus,
    JobStatus,
    QAJob,
    QAJobItem,
    Question,
    QuestionStatus,
    Turn,
    TurnStatus,
    utcnow,
)

ACTIVE_JOB = (JobStatus.QUEUED, JobStatus.RUNNING)


def job_status(db: Session, *, job_id: str) -> JobStatus:
    status = db.scalar(select(QAJob.status).where(QAJob.id == job_id))
    if status is None:
        raise NotFound("job", job_id)
    return status


def active_job_ids(db: Session) -> list[str]:
    """Ids of the jobs still queued or running."""
    return list(db.scalars(select(QAJob.id).where(QAJob.status.in_(ACTIVE_JOB))))


def mark_job_running(db: Session, *, job_id: str) -> bool:
    """queued -> running with started_at (what job_progress's ETA counts from); False if it was not queued."""
    matched = update_rows(
        db, QAJob, QAJob.id == job_id, QAJob.status == JobStatus.QUEUED, status=JobStatus.RUNNING, started_at=utcnow()
    )
    return matched == 1


def pending_item_ids(db: Session, *, job_id: str) -> list[int]:
    """Ids of the job's pending items in file order."""
    query = (
        select(QAJobItem.id)
        .where(QAJobItem.job_id == job_id, QAJobItem.status == ItemStatus.PENDING)
        .order_by(QAJobItem.position)
    )
    return list(db.scalars(query))


def turn_outcome(db: Session, *, turn_id: int) -> dict[str, Any]:
    """What a waiting caller needs about a reply turn, whatever its state."""
    turn = db.get(Turn, turn_id)
    if turn is None:
        raise NotFound("turn", turn_id)
    return turn_outcome_of(turn_id=turn.id, status=turn.status, text=turn.text, model_version=turn.model_version,
                           latency_ms=turn.latency_ms, error=turn.error)


def turn_outcome_of(
    *, turn_id: int, status: TurnStatus, text: str | None, model_version: str | None, latency_ms: float | None,
    error: str | None = None,
) -> dict[str, Any]:
    """turn_outcome from the values themselves: a task that has just stored them need not read them back."""
    return {
        "turn_id": turn_id,
        "status": status.value,
        "text": text,
        "model_version": model_version,
        "latency_ms": latency_ms,
        "error": error,
    }


def question_outcome(db: Session, *, question_id: str) -> dict[str, Any]:
    """What a waiting caller needs about a question, whatever its state."""
    row = db.get(Question, question_id)
    if row is None:
        raise NotFound("question", question_id)
    return question_outcome_of(
        question_id=row.id, status=row.status, answer=row.answer, score=row.score,
        span=(row.attention or {}).get("span"), n_best=row.n_best, model_version=row.model_version,
        latency_ms=row.latency_ms, error=row.error,
    )


def question_outcome_of(
    *, question_id: str, status: QuestionStatus, answer: str | None, score: float | None, span: Any,
    n_best: list[dict[str, Any]] | None, model_version: str | None, latency_ms: float | None,
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
