"""Batch QA jobs and their items: a file of questions answered in chunks by the batch queue.

UI side (owner-scoped; another owner's rows raise `NotFound`): create_job, get_job, list_jobs, job_progress,
cancel_job, export_results, failed_items.
Worker side (by ids the service enqueued): job_status, active_job_ids, start_job, pending_item_ids,
pending_item, record_item_answer, record_item_failure, finish_job_if_complete, fail_job.

Every function takes the Session `db` first and keyword arguments after it, and never commits. Writes a
redelivered task may repeat only touch rows that are still pending (guarded UPDATEs), so they report False
and change nothing the second time. On PostgreSQL, writers lock a job's item rows before its job row, so
writers on one job do not deadlock; the job row lock in finish_job_if_complete makes "the last item finishes
the job" hold even when the last two items finish at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from storage.db import finish_pending, update_rows
from storage.errors import DuplicateKey, InputTooLong, NotFound
from storage.limits import DEFAULT_LIMITS, Limits, check_owner, check_storable, check_text, storable
from storage.models import (
    FILENAME_MAX_CHARS,
    ITEM_KEY_MAX_CHARS,
    MODEL_VERSION_MAX_CHARS,
    ItemStatus,
    JobStatus,
    Passage,
    QAJob,
    QAJobItem,
    utcnow,
)
from storage.ownership import get_owned
from storage.questions import passage_hash, upsert_passages

ACTIVE_JOB = (JobStatus.QUEUED, JobStatus.RUNNING)
# A job's ETA waits for a measured rate (_eta_s): items finished after the first burst (those within
# ETA_FIRST_BURST_S of the first answer), at least ETA_MIN_ITEMS of them, over at least ETA_MIN_SPAN_S.
ETA_FIRST_BURST_S = 1.0
ETA_MIN_ITEMS = 8
ETA_MIN_SPAN_S = 5.0


@dataclass(frozen=True)
class ItemInput:
    item_id: int
    item_key: str
    question: str
    passage: str


@dataclass(frozen=True)
class JobProgress:
    job_id: str
    status: JobStatus
    total: int
    done: int
    failed: int
    pending: int
    cancelled: int
    fraction: float  # share of items no longer pending, 0..1
    eta_s: float | None  # None unless the job is running and the rate items finish at is known

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for the CLI and the UI: {"job_id", "state", counts, "fraction", "eta_s"}."""
        return {
            "job_id": self.job_id,
            "state": self.status.value,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "pending": self.pending,
            "cancelled": self.cancelled,
            "fraction": round(self.fraction, 4),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
        }


# --- the owner's side -------------------------------------------------------------------------------------


def create_job(
    db: Session,
    *,
    owner: str,
    filename: str,
    items: Sequence[Mapping[str, str]],
    errors: Sequence[Mapping[str, Any]] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> str:
    """Store a job and its items (each {"item_key", "question", "passage"}) in bulk; return the job id.

    `errors` are the input lines the parser rejected ({"line", "reason"}), kept for the user to read.
    Every item is checked before anything is written: EmptyInput / InputTooLong name the item, DuplicateKey
    a repeated key. A job without a valid item is stored as failed, so the user still sees its errors.
    """
    check_owner(owner)
    if len(filename) > FILENAME_MAX_CHARS:
        raise InputTooLong("filename", limit=FILENAME_MAX_CHARS, length=len(filename))
    check_storable(filename, field="filename")
    for field, count in (("items", len(items)), ("parse errors", len(errors))):
        if count > limits.max_batch_items:
            raise InputTooLong(field, limit=limits.max_batch_items, length=count)
    keys: set[str] = set()
    texts_by_hash: dict[str, str] = {}
    item_hashes: list[str] = []
    for item in items:
        key = check_text(item["item_key"], limit=ITEM_KEY_MAX_CHARS, field="item_key")
        if key in keys:
            raise DuplicateKey(key)
        keys.add(key)
        check_text(item["question"], limit=limits.max_question_chars, field=f"question of item {key!r}")
        passage = check_text(
            item["passage"], limit=limits.max_passage_chars, field=f"passage of item {key!r}"
        )
        digest = passage_hash(passage)
        texts_by_hash[digest] = passage
        item_hashes.append(digest)

    now = utcnow()
    job = QAJob(
        owner=owner,
        filename=filename,
        status=JobStatus.QUEUED if items else JobStatus.FAILED,
        total_items=len(items),
        parse_errors=[{"line": int(error["line"]), "reason": str(error["reason"])} for error in errors],
        error=None if items else "the file has no valid items",
        created_at=now,
        finished_at=None if items else now,
    )
    db.add(job)
    db.flush()
    if items:
        passage_ids = upsert_passages(db, texts_by_hash)
        rows = [
            {
                "job_id": job.id,
                "position": position,
                "item_key": item["item_key"],
                "question": item["question"],
                "passage_id": passage_ids[digest],
                "status": ItemStatus.PENDING,
                "attempts": 0,
            }
            for position, (item, digest) in enumerate(zip(items, item_hashes, strict=True))
        ]
        db.execute(insert(QAJobItem), rows)
    return job.id


def get_job(db: Session, *, job_id: str, owner: str) -> QAJob:
    return get_owned(db, QAJob, kind="job", row_id=job_id, owner=owner)


def list_jobs(db: Session, *, owner: str, limit: int = 50) -> list[QAJob]:
    """The owner's jobs, newest first."""
    if not storable(owner):
        return []
    query = select(QAJob).where(QAJob.owner == owner).order_by(QAJob.created_at.desc(), QAJob.id).limit(limit)
    return list(db.scalars(query))


def cancel_job(db: Session, *, job_id: str, owner: str) -> bool:
    """Cancel a queued or running job and its pending items (answered items keep their answers).

    False if the job had already ended. Items a worker is decoding right now finish, but their answers are
    not stored, because the item is no longer pending.
    """
    get_job(db, job_id=job_id, owner=owner)
    return _stop_job(
        db, job_id=job_id, job_status=JobStatus.CANCELLED, item_status=ItemStatus.CANCELLED, error=None
    )


def job_progress(db: Session, *, job_id: str, owner: str) -> JobProgress:
    """Counts by item status, the share finished, and an ETA once the rate items finish at is known (_eta_s)."""
    job = get_job(db, job_id=job_id, owner=owner)
    return _progress(db, job, _item_counts(db, [job_id]).get(job_id, {}))


def jobs_with_progress(db: Session, *, owner: str, limit: int = 50) -> list[tuple[QAJob, JobProgress]]:
    """The owner's jobs, newest first (as list_jobs), each with its job_progress: the item counts of all of them
    come from one grouped query, whatever the number of items."""
    jobs = list_jobs(db, owner=owner, limit=limit)
    counts = _item_counts(db, [job.id for job in jobs])
    return [(job, _progress(db, job, counts.get(job.id, {}))) for job in jobs]


def _item_counts(db: Session, job_ids: Sequence[str]) -> dict[str, dict[ItemStatus, int]]:
    """job id -> item status -> count, one GROUP BY for all of `job_ids`."""
    counts: dict[str, dict[ItemStatus, int]] = {}
    if not job_ids:
        return counts
    query = (
        select(QAJobItem.job_id, QAJobItem.status, func.count())
        .where(QAJobItem.job_id.in_(job_ids))
        .group_by(QAJobItem.job_id, QAJobItem.status)
    )
    for job_id, status, count in db.execute(query):
        counts.setdefault(job_id, {})[status] = count
    return counts


def _progress(db: Session, job: QAJob, counts: Mapping[ItemStatus, int]) -> JobProgress:
    done, failed = counts.get(ItemStatus.DONE, 0), counts.get(ItemStatus.FAILED, 0)
    pending, cancelled = counts.get(ItemStatus.PENDING, 0), counts.get(ItemStatus.CANCELLED, 0)
    total = done + failed + pending + cancelled
    eta_s = (
        _eta_s(db, job_id=job.id, pending=pending) if job.status is JobStatus.RUNNING and pending else None
    )
    return JobProgress(
        job_id=job.id,
        status=job.status,
        total=total,
        done=done,
        failed=failed,
        pending=pending,
        cancelled=cancelled,
        fraction=(total - pending) / total if total else 1.0,
        eta_s=eta_s,
    )


def _eta_s(db: Session, *, job_id: str, pending: int) -> float | None:
    """Seconds until `pending` items are answered, at the rate items finished after the first burst did; None
    until ETA_MIN_ITEMS have finished after it, over at least ETA_MIN_SPAN_S. Two aggregate queries (first and
    last finish, then how many finished after the burst), not a read of every finished item.

    The time to the first answers (queue wait, model warm-up) and a first chunk that finishes all at once say
    nothing about the rate: counted from the job's start they made early estimates jump (112 s, 3 min, 29 s).
    """
    finished = (
        QAJobItem.job_id == job_id,
        QAJobItem.status.in_((ItemStatus.DONE, ItemStatus.FAILED)),
        QAJobItem.finished_at.is_not(None),
    )
    first, last = db.execute(
        select(func.min(QAJobItem.finished_at), func.max(QAJobItem.finished_at)).where(*finished)
    ).one()
    if first is None or last is None:
        return None
    burst_end = first + timedelta(seconds=ETA_FIRST_BURST_S)
    later = (
        db.scalar(
            select(func.count()).select_from(QAJobItem).where(*finished, QAJobItem.finished_at > burst_end)
        )
        or 0
    )
    span_s = (last - first).total_seconds()
    if later < ETA_MIN_ITEMS or span_s < ETA_MIN_SPAN_S:
        return None
    return pending * span_s / later


def export_results(db: Session, *, job_id: str, owner: str) -> list[dict[str, Any]]:
    """One row per item in file order: {"id" (the item_key), "question", "answer", "score", "status", "error"}."""
    get_job(db, job_id=job_id, owner=owner)
    query = (
        select(
            QAJobItem.item_key,
            QAJobItem.question,
            QAJobItem.answer,
            QAJobItem.score,
            QAJobItem.status,
            QAJobItem.error,
        )
        .where(QAJobItem.job_id == job_id)
        .order_by(QAJobItem.position)
    )
    return [
        {
            "id": key,
            "question": question,
            "answer": answer,
            "score": score,
            "status": status.value,
            "error": error,
        }
        for key, question, answer, score, status, error in db.execute(query)
    ]


def failed_items(db: Session, *, job_id: str, owner: str) -> list[dict[str, str | None]]:
    """The job's failed items in file order, {"id" (the item_key), "error"}: what a status report lists, read
    without the other items' rows (a poll of a large job would otherwise read all of them)."""
    get_job(db, job_id=job_id, owner=owner)
    query = (
        select(QAJobItem.item_key, QAJobItem.error)
        .where(QAJobItem.job_id == job_id, QAJobItem.status == ItemStatus.FAILED)
        .order_by(QAJobItem.position)
    )
    return [{"id": key, "error": error} for key, error in db.execute(query)]


# --- the worker's side ------------------------------------------------------------------------------------


def job_status(db: Session, *, job_id: str) -> JobStatus:
    status = db.scalar(select(QAJob.status).where(QAJob.id == job_id))
    if status is None:
        raise NotFound("job", job_id)
    return status


def active_job_ids(db: Session) -> list[str]:
    """Ids of the jobs still queued or running."""
    return list(db.scalars(select(QAJob.id).where(QAJob.status.in_(ACTIVE_JOB))))


def start_job(db: Session, *, job_id: str) -> bool:
    """queued -> running with started_at (what job_progress's ETA counts from); False if it was not queued."""
    matched = update_rows(
        db,
        QAJob,
        QAJob.id == job_id,
        QAJob.status == JobStatus.QUEUED,
        status=JobStatus.RUNNING,
        started_at=utcnow(),
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


def pending_item(db: Session, *, item_id: int) -> ItemInput | None:
    """Worker side: one item's input, or None if it is no longer pending (answered, failed or cancelled)."""
    query = (
        select(QAJobItem.status, QAJobItem.item_key, QAJobItem.question, Passage.text)
        .join(QAJobItem.passage)
        .where(QAJobItem.id == item_id)
    )
    row = db.execute(query).one_or_none()
    if row is None:
        raise NotFound("item", item_id)
    status, item_key, question, passage = row
    if status is not ItemStatus.PENDING:
        return None
    return ItemInput(item_id=item_id, item_key=item_key, question=question, passage=passage)


def record_item_answer(db: Session, *, item_id: int, answer: str, score: float, model_version: str) -> bool:
    """Worker side: store an item's answer if it is still pending; False (and no write) otherwise.

    Call finish_job_if_complete in the same transaction afterwards.
    """
    check_text(model_version, limit=MODEL_VERSION_MAX_CHARS, field="model_version")
    values = {
        "status": ItemStatus.DONE,
        "answer": answer,
        "score": score,
        "model_version": model_version,
        "error": None,
        "finished_at": utcnow(),
    }
    return finish_pending(db, QAJobItem, row_id=item_id, values=values)


def record_item_failure(db: Session, *, item_id: int, error: str) -> bool:
    """Worker side: mark a pending item failed; False if it was not pending."""
    values = {"status": ItemStatus.FAILED, "error": error, "finished_at": utcnow()}
    return finish_pending(db, QAJobItem, row_id=item_id, values=values)


def finish_job_if_complete(db: Session, *, job_id: str) -> bool:
    """Worker side: mark a queued or running job done once no item is pending; True if this call did it."""
    # Lock the job row, then count: of two transactions finishing the last two items, the second to get the
    # lock counts after the first committed and sees nothing pending.
    job = db.scalar(
        select(QAJob).where(QAJob.id == job_id).with_for_update().execution_options(populate_existing=True)
    )
    if job is None:
        raise NotFound("job", job_id)
    if job.status not in ACTIVE_JOB or _count_items(db, job_id=job_id, status=ItemStatus.PENDING):
        return False
    job.status = JobStatus.DONE
    job.finished_at = utcnow()
    db.flush()
    return True


def fail_job(db: Session, *, job_id: str, error: str) -> bool:
    """Worker side: the whole job cannot run (e.g. no model for it): its pending items and the job fail."""
    return _stop_job(
        db, job_id=job_id, job_status=JobStatus.FAILED, item_status=ItemStatus.FAILED, error=error
    )


def _stop_job(
    db: Session, *, job_id: str, job_status: JobStatus, item_status: ItemStatus, error: str | None
) -> bool:
    now = utcnow()
    pending = (QAJobItem.job_id == job_id, QAJobItem.status == ItemStatus.PENDING)
    update_rows(db, QAJobItem, *pending, status=item_status, error=error, finished_at=now)
    active = (QAJob.id == job_id, QAJob.status.in_(ACTIVE_JOB))
    return update_rows(db, QAJob, *active, status=job_status, error=error, finished_at=now) == 1


def _count_items(db: Session, *, job_id: str, status: ItemStatus) -> int:
    query = (
        select(func.count())
        .select_from(QAJobItem)
        .where(QAJobItem.job_id == job_id, QAJobItem.status == status)
    )
    return db.scalar(query) or 0


def failed_items_by_job(
    db: Session, *, owner: str, job_ids: Sequence[str]
) -> dict[str, list[dict[str, str | None]]]:
    """failed_items of several of the owner's jobs in one query: job id -> its failed items (jobs with none
    are left out)."""
    found: dict[str, list[dict[str, str | None]]] = {}
    if not job_ids or not storable(owner, *job_ids):
        return found
    query = (
        select(QAJobItem.job_id, QAJobItem.item_key, QAJobItem.error)
        .join(QAJob, QAJob.id == QAJobItem.job_id)
        .where(QAJob.owner == owner, QAJobItem.job_id.in_(job_ids), QAJobItem.status == ItemStatus.FAILED)
        .order_by(QAJobItem.job_id, QAJobItem.position)
    )
    for job_id, key, error in db.execute(query):
        found.setdefault(job_id, []).append({"id": key, "error": error})
    return found
