"""SQLAlchemy 2.0 typed mappings: conversations and turns, passages and questions, batch QA jobs and items.

Statuses are str enums stored as short strings (no database enum types, so adding a status needs no type
migration). Timestamps are timezone-aware UTC on every backend. JSON columns hold what the model produced
(decoding settings, n-best lists, attention data). Queries and writes live in conversations.py, questions.py and batch_jobs.py.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

OWNER_MAX_CHARS = 200
TITLE_MAX_CHARS = 200
ITEM_KEY_MAX_CHARS = 200
FILENAME_MAX_CHARS = 255
CLIENT_REQUEST_ID_MAX_CHARS = 64
MODEL_VERSION_MAX_CHARS = 200


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A random, unguessable public id (122 random bits)."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use an aware datetime in UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Integer keys that autoincrement everywhere: SQLite only does so for INTEGER PRIMARY KEY.
IdInt = BigInteger().with_variant(Integer(), "sqlite")
JSONType = JSON().with_variant(JSONB(), "postgresql")


def _str_enum(enum_class: type[enum.StrEnum]) -> Enum:
    return Enum(
        enum_class,
        native_enum=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class TurnStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the user stopped it while pending; a worker that meets it skips it


class QuestionStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the user stopped it while pending; a worker that meets it skips it


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ItemStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Base(DeclarativeBase):
    # Deterministic constraint names, so migrations can refer to them on PostgreSQL and in SQLite batch mode.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_owner_updated_at", "owner", "updated_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(OWNER_MAX_CHARS))
    title: Mapped[str] = mapped_column(String(TITLE_MAX_CHARS), default="")
    language: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    turns: Mapped[list[Turn]] = relationship(
        back_populates="conversation",
        order_by="Turn.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class Turn(Base):
    """One message. A user message and the pending assistant reply to it are created together."""

    __tablename__ = "turns"
    __table_args__ = (
        UniqueConstraint("conversation_id", "position"),
        UniqueConstraint("conversation_id", "client_request_id"),
        # conversations.pending_reply_ids (every sweep): status and role equal, in id order.
        Index("ix_turns_status_role_id", "status", "role", "id"),
    )

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[Role] = mapped_column(_str_enum(Role))
    status: Mapped[TurnStatus] = mapped_column(_str_enum(TurnStatus))
    text: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(MODEL_VERSION_MAX_CHARS))
    decoding: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    client_request_id: Mapped[str | None] = mapped_column(String(CLIENT_REQUEST_ID_MAX_CHARS))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    conversation: Mapped[Conversation] = relationship(back_populates="turns")


class Passage(Base):
    """A reading-comprehension context, stored once per distinct text (sha256 of its UTF-8 bytes)."""

    __tablename__ = "passages"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Question(Base):
    """A question asked interactively about a passage, and its answer.

    `attention` is what the UI draws: {"source_tokens", "output_tokens", "attention" ([out][src]), "p_gen",
    "span" ([start, end) or null)}; `n_best` is a list of Hypothesis.to_dict() results, best first.
    """

    __tablename__ = "questions"
    __table_args__ = (
        Index("ix_questions_owner_created_at", "owner", "created_at"),
        # questions.pending_question_ids (every sweep): status equal, in (created_at, id) order.
        Index("ix_questions_status_created_at_id", "status", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(OWNER_MAX_CHARS))
    passage_id: Mapped[int] = mapped_column(ForeignKey("passages.id"), index=True)
    question: Mapped[str] = mapped_column(Text)
    status: Mapped[QuestionStatus] = mapped_column(_str_enum(QuestionStatus))
    answer: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    n_best: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    attention: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    model_version: Mapped[str | None] = mapped_column(String(MODEL_VERSION_MAX_CHARS))
    decoding: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    passage: Mapped[Passage] = relationship()


class QAJob(Base):
    """An uploaded batch of questions; its progress is counted from its items."""

    __tablename__ = "qa_jobs"
    __table_args__ = (
        Index("ix_qa_jobs_owner_created_at", "owner", "created_at"),
        Index("ix_qa_jobs_status", "status"),  # batch_jobs.active_job_ids (every sweep, and at start-up)
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(OWNER_MAX_CHARS))
    filename: Mapped[str] = mapped_column(String(FILENAME_MAX_CHARS), default="")
    status: Mapped[JobStatus] = mapped_column(_str_enum(JobStatus))
    total_items: Mapped[int] = mapped_column(Integer)
    parse_errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    items: Mapped[list[QAJobItem]] = relationship(
        back_populates="job",
        order_by="QAJobItem.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class QAJobItem(Base):
    """One line of a batch: `item_key` is the id from the input file, unique within its job."""

    __tablename__ = "qa_job_items"
    __table_args__ = (
        UniqueConstraint("job_id", "item_key"),
        Index("ix_qa_job_items_job_id_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("qa_jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    item_key: Mapped[str] = mapped_column(String(ITEM_KEY_MAX_CHARS))
    question: Mapped[str] = mapped_column(Text)
    passage_id: Mapped[int] = mapped_column(ForeignKey("passages.id"), index=True)
    status: Mapped[ItemStatus] = mapped_column(_str_enum(ItemStatus))
    answer: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(MODEL_VERSION_MAX_CHARS))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    job: Mapped[QAJob] = relationship(back_populates="items")
    passage: Mapped[Passage] = relationship()
