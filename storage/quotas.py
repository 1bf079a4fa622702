"""Per-owner limits, from the settings: how many requests one owner may send in any minute
(S2S_OWNER_REQUESTS_PER_MINUTE: chat messages, questions and batch files), and how many batch items it may
have waiting at once over all its jobs (S2S_OWNER_MAX_PENDING_ITEMS). 0 turns a limit off.

They are counted in the database, so every UI process and terminal shares them, and checked by the request
flows (flows/) in the transaction that stores the request. Two requests of one owner at the same instant can
both pass at the boundary: the limits keep one owner from flooding the queue, they are not a billing meter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from settings import Settings
from storage.errors import OverLimit
from storage.limits import check_owner
from storage.models import Conversation, ItemStatus, QAJob, QAJobItem, Question, Role, Turn

WINDOW = timedelta(minutes=1)


def requests_since(db: Session, *, owner: str, since: datetime) -> int:
    """Chat messages, questions and batch jobs `owner` stored since `since`."""
    messages = (
        select(func.count())
        .select_from(Turn)
        .join(Conversation)
        .where(Conversation.owner == owner, Turn.role == Role.USER, Turn.created_at >= since)
    )
    questions = (
        select(func.count())
        .select_from(Question)
        .where(Question.owner == owner, Question.created_at >= since)
    )
    jobs = select(func.count()).select_from(QAJob).where(QAJob.owner == owner, QAJob.created_at >= since)
    return sum(int(db.scalar(query) or 0) for query in (messages, questions, jobs))


def pending_items(db: Session, *, owner: str) -> int:
    """Batch items of `owner`'s jobs still waiting for an answer."""
    return int(
        db.scalar(
            select(func.count())
            .select_from(QAJobItem)
            .join(QAJob)
            .where(QAJob.owner == owner, QAJobItem.status == ItemStatus.PENDING)
        )
        or 0
    )


@dataclass(frozen=True)
class Quota:
    """The per-owner limits (0: none), passed in like storage.limits.Limits: storage reads no settings."""

    per_minute: int
    max_pending_items: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Quota:
        return cls(
            per_minute=settings.owner_requests_per_minute, max_pending_items=settings.owner_max_pending_items
        )


def check_quota(db: Session, *, owner: str, quota: Quota, items: int = 0) -> None:
    """Raise OverLimit if one more request from `owner` (a batch job of `items` items) is over `quota`; the
    owner's own errors first (an owner key with a NUL in it must not reach PostgreSQL, even in a query)."""
    check_owner(owner)
    per_minute = quota.per_minute
    if per_minute and requests_since(db, owner=owner, since=datetime.now(UTC) - WINDOW) >= per_minute:
        raise OverLimit(
            f"too many requests: the limit is {per_minute} a minute for each user; "
            "wait a minute and try again"
        )
    most = quota.max_pending_items
    if items and most:
        waiting = pending_items(db, owner=owner)
        if waiting + items > most:
            raise OverLimit(
                f"too many batch items waiting: {waiting} already and {items} more would pass the "
                f"limit of {most}; wait for your jobs to finish or cancel one"
            )
