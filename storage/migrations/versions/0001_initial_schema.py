"""Initial schema: conversations and turns, passages and questions, QA jobs and items.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Types are spelled out here rather than imported from storage.models, so this revision keeps meaning what it
meant when the models change. Statuses are plain strings (the models' non-native enums); timestamps are
timezone-aware; JSON is JSONB on PostgreSQL.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _status() -> sa.String:
    return sa.String(16)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
    )
    op.create_index("ix_conversations_owner_updated_at", "conversations", ["owner", "updated_at"])

    op.create_table(
        "turns",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", _status(), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("decoding", _json(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("client_request_id", sa.String(64), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("finished_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_turns"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_turns_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("conversation_id", "position", name="uq_turns_conversation_id_position"),
        sa.UniqueConstraint(
            "conversation_id", "client_request_id", name="uq_turns_conversation_id_client_request_id"
        ),
    )

    op.create_table(
        "passages",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_passages"),
        sa.UniqueConstraint("sha256", name="uq_passages_sha256"),
    )

    op.create_table(
        "questions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("passage_id", _id(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("n_best", _json(), nullable=True),
        sa.Column("attention", _json(), nullable=True),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("decoding", _json(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("finished_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_questions"),
        sa.ForeignKeyConstraint(["passage_id"], ["passages.id"], name="fk_questions_passage_id_passages"),
    )
    op.create_index("ix_questions_owner_created_at", "questions", ["owner", "created_at"])
    op.create_index("ix_questions_passage_id", "questions", ["passage_id"])

    op.create_table(
        "qa_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("total_items", sa.Integer(), nullable=False),
        sa.Column("parse_errors", _json(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("started_at", _time(), nullable=True),
        sa.Column("finished_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_qa_jobs"),
    )
    op.create_index("ix_qa_jobs_owner_created_at", "qa_jobs", ["owner", "created_at"])

    op.create_table(
        "qa_job_items",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_key", sa.String(200), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("passage_id", _id(), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("finished_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_qa_job_items"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["qa_jobs.id"], name="fk_qa_job_items_job_id_qa_jobs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["passage_id"], ["passages.id"], name="fk_qa_job_items_passage_id_passages"),
        sa.UniqueConstraint("job_id", "item_key", name="uq_qa_job_items_job_id_item_key"),
    )
    op.create_index("ix_qa_job_items_job_id_status", "qa_job_items", ["job_id", "status"])
    op.create_index("ix_qa_job_items_passage_id", "qa_job_items", ["passage_id"])


def downgrade() -> None:
    op.drop_table("qa_job_items")
    op.drop_table("qa_jobs")
    op.drop_table("questions")
    op.drop_table("passages")
    op.drop_table("turns")
    op.drop_table("conversations")
