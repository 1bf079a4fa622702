"""Alembic migrations up and down on each backend, the `s2s db` commands, and the query plans of the reads by
status that every sweep makes (they must use 0002's indexes, not scan their tables)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, func, insert, inspect, select
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from cli import main as s2s
from settings import get_settings
from storage import batch_jobs, conversations, migrate, questions
from storage.db import make_engine, transaction
from storage.models import (
    Base,
    Conversation,
    JobStatus,
    Passage,
    QAJob,
    Question,
    QuestionStatus,
    Role,
    Turn,
    TurnStatus,
    utcnow,
)

TABLES = {"conversations", "turns", "passages", "questions", "qa_jobs", "qa_job_items"}
STATUS_INDEXES = {
    "turns": "ix_turns_status_role_id",
    "questions": "ix_questions_status_created_at_id",
    "qa_jobs": "ix_qa_jobs_status",
}


def _tables(url: URL) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_and_downgrade_to_base_removes_them(fresh_url: URL) -> None:
    before = (migrate.current(fresh_url), migrate.is_up_to_date(fresh_url))
    migrate.upgrade(fresh_url)
    upgraded = (migrate.current(fresh_url), migrate.is_up_to_date(fresh_url), _tables(fresh_url))
    migrate.downgrade(fresh_url, "base")
    assert before == (None, False)
    assert upgraded[:2] == (migrate.head(), True) and TABLES <= upgraded[2]
    assert migrate.current(fresh_url) is None and not TABLES & _tables(fresh_url)


def test_the_migrations_build_exactly_the_schema_the_models_describe(fresh_url: URL) -> None:
    migrate.upgrade(fresh_url)
    engine = make_engine(fresh_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_ensure_schema_migrates_a_new_database_once_and_then_does_nothing(fresh_url: URL) -> None:
    assert migrate.ensure_schema(fresh_url) is True
    assert migrate.ensure_schema(fresh_url) is False
    assert migrate.is_up_to_date(fresh_url)


def test_s2s_db_commands_upgrade_report_and_downgrade_the_database_in_database_url(
    fresh_url: URL, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A plain postgresql:// URL, as users write it; storage picks the psycopg driver itself.
    plain = (
        fresh_url.set(drivername="postgresql") if fresh_url.get_backend_name() == "postgresql" else fresh_url
    )
    monkeypatch.setenv("DATABASE_URL", plain.render_as_string(hide_password=False))
    monkeypatch.setattr(s2s, "COMMAND_MODULES", ("cli.db_commands",))  # not the model commands' imports
    get_settings.cache_clear()
    try:
        codes = [s2s.main(["db", "current"]), s2s.main(["db", "upgrade"]), s2s.main(["db", "current"])]
        after_upgrade = migrate.current(fresh_url)
        codes.append(s2s.main(["db", "downgrade", "base"]))
    finally:
        get_settings.cache_clear()
    lines = capsys.readouterr().out.splitlines()
    assert codes == [0, 0, 0, 0] and after_upgrade == migrate.head()
    assert "behind" in lines[0] and "up to date" in lines[2] and "base" in lines[3]
    assert migrate.current(fresh_url) is None


def _indexes(url: URL) -> dict[str, set[str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            found = inspect(connection)
            return {
                table: {index["name"] or "" for index in found.get_indexes(table)} for table in STATUS_INDEXES
            }
    finally:
        engine.dispose()


def _seed(engine: Engine, *, finished: int) -> dict[str, int]:
    """A database in use: `finished` done turns, questions and jobs each, beside a few pending or running ones
    (the sweeper's reads want those few). Returns the row count of each table."""
    now = utcnow()
    with transaction(engine) as db:
        db.execute(
            insert(Conversation),
            [{"id": "c", "owner": "o", "title": "", "created_at": now, "updated_at": now}],
        )
        db.execute(insert(Passage), [{"sha256": "0" * 64, "text": "p", "created_at": now}])
        passage_id = db.scalar(select(Passage.id))
        turns = [
            {"conversation_id": "c", "position": i, "role": list(Role)[i % 2], "status": TurnStatus.DONE}
            for i in range(finished)
        ]
        turns += [
            {"conversation_id": "c", "position": i, "role": Role.ASSISTANT, "status": TurnStatus.PENDING}
            for i in range(finished, finished + 3)
        ]
        db.execute(insert(Turn), [turn | {"created_at": now} for turn in turns])
        asked = [
            {"id": f"q{i}", "owner": "o", "passage_id": passage_id, "question": "q", "status": status}
            | {"created_at": now + timedelta(seconds=i)}
            for i, status in enumerate([QuestionStatus.DONE] * finished + [QuestionStatus.PENDING] * 3)
        ]
        db.execute(insert(Question), asked)
        uploads = [
            {"id": f"j{i}", "owner": "o", "status": status, "total_items": 0, "parse_errors": []}
            | {"created_at": now}
            for i, status in enumerate([JobStatus.DONE] * finished + [JobStatus.RUNNING, JobStatus.QUEUED])
        ]
        db.execute(insert(QAJob), uploads)
    return _row_counts(engine)


def _row_counts(engine: Engine) -> dict[str, int]:
    with transaction(engine) as db:
        return {
            model.__tablename__: db.scalar(select(func.count()).select_from(model)) or 0
            for model in (Conversation, Passage, Turn, Question, QAJob)
        }


def test_0002_adds_the_status_indexes_to_a_database_in_use_and_downgrade_removes_them(fresh_url: URL) -> None:
    migrate.upgrade(fresh_url, "0001")
    engine = make_engine(fresh_url)
    try:
        counts = _seed(engine, finished=50)
        before = _indexes(fresh_url)
        migrate.upgrade(fresh_url, "0002")
        upgraded = (migrate.current(fresh_url), _indexes(fresh_url), _row_counts(engine))
        migrate.downgrade(fresh_url, "0001")
        downgraded = (migrate.current(fresh_url), _indexes(fresh_url), _row_counts(engine))
        migrate.upgrade(fresh_url, "0002")
        again = (migrate.current(fresh_url), _indexes(fresh_url))
    finally:
        engine.dispose()
    assert all(STATUS_INDEXES[table] not in names for table, names in before.items())
    assert upgraded[0] == "0002" and upgraded[2] == counts
    assert all(STATUS_INDEXES[table] in names for table, names in upgraded[1].items())
    assert downgraded == ("0001", before, counts)
    assert again == upgraded[:2]


SweepRead = Callable[[Session], Any]
SWEEP_READS: dict[str, SweepRead] = {
    "turns": conversations.pending_reply_ids,
    "questions": questions.pending_question_ids,
    "qa_jobs": batch_jobs.active_job_ids,
}


def _plan(url: URL, read: SweepRead) -> tuple[Any, str]:
    """What `read` returns, and the query plan of the SELECT it ran, EXPLAINed with the parameters it bound.

    On an engine of its own: the sqlite3 module caches prepared statements per connection, and a cached EXPLAIN
    QUERY PLAN touches no table, so SQLite would not notice the schema changed and print the old plan."""
    ran: list[tuple[str, Any]] = []
    engine = make_engine(url)

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            ran.append((statement, parameters))

    with engine.connect() as connection:
        event.listen(connection, "before_cursor_execute", record)
        with Session(bind=connection) as db:
            result = read(db)
        event.remove(connection, "before_cursor_execute", record)
        [(statement, parameters)] = ran
        explain = "EXPLAIN QUERY PLAN " if connection.dialect.name == "sqlite" else "EXPLAIN "
        rows = connection.exec_driver_sql(explain + statement, parameters).fetchall()
    engine.dispose()
    return result, "\n".join(str(row[-1]) for row in rows)


def _analyze(engine: Engine) -> None:
    """PostgreSQL plans from table statistics: ANALYZE stands for autovacuum's. SQLite is left as it runs (no
    sqlite_stat1: the service never runs ANALYZE there)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.exec_driver_sql(f"ANALYZE {', '.join(STATUS_INDEXES)}")


@pytest.mark.parametrize("table", sorted(SWEEP_READS))
def test_the_sweepers_reads_by_status_use_an_index_and_no_sort_instead_of_scanning_the_table(
    fresh_url: URL, table: str
) -> None:
    """Measured at 0001 (no index: the plan scans the table) and at head, on the same rows, so the check is
    seen to tell the two apart."""
    migrate.upgrade(fresh_url, "0001")
    engine = make_engine(fresh_url)
    try:
        _seed(engine, finished=3000)
        scan = f"SCAN {table}" if engine.dialect.name == "sqlite" else f"Seq Scan on {table}"
        _analyze(engine)
        found_before, plan_before = _plan(fresh_url, SWEEP_READS[table])
        migrate.upgrade(fresh_url)
        _analyze(engine)
        found, plan = _plan(fresh_url, SWEEP_READS[table])
    finally:
        engine.dispose()
    assert len(found) == (2 if table == "qa_jobs" else 3) and sorted(found) == sorted(found_before)
    assert scan in plan_before and STATUS_INDEXES[table] not in plan_before
    assert STATUS_INDEXES[table] in plan, plan
    assert scan not in plan and "TEMP B-TREE" not in plan and "Sort" not in plan, plan
