"""Indexes for the reads by status that every worker's sweep makes (workers/sweeper.py, every 15 s).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

Without them each sweep scanned the whole of turns, questions and qa_jobs, which only grow:
conversations.pending_reply_ids (status and role equal, in id order), questions.pending_question_ids (status
equal, in created_at, id order) and batch_jobs.active_job_ids (status in queued, running; also at start-up
recovery). Each index leads with the equality columns and then the ORDER BY ones, so the read is a range of
the index in the order wanted, with no sort. Batch items already have ix_qa_job_items_job_id_status (0001).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_turns_status_role_id", "turns", ["status", "role", "id"])
    op.create_index("ix_questions_status_created_at_id", "questions", ["status", "created_at", "id"])
    op.create_index("ix_qa_jobs_status", "qa_jobs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_qa_jobs_status", table_name="qa_jobs")
    op.drop_index("ix_questions_status_created_at_id", table_name="questions")
    op.drop_index("ix_turns_status_role_id", table_name="turns")
