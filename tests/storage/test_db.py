"""Engines, transactions and the column types every backend must agree on."""

from __future__ import annotations

import gc
import threading
import weakref
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from storage import conversations as conv
from storage import migrate
from storage.db import make_engine, normalize_url, read_transaction, session_factory, transaction
from storage.models import Conversation
from tests.storage.conftest import OWNER


@pytest.mark.parametrize(
    ("raw", "driver"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql+psycopg"),
        ("postgres://user:secret@db/s2s", "postgresql+psycopg"),
        ("postgresql+psycopg://user@db/s2s", "postgresql+psycopg"),
        ("sqlite:////tmp/s2s.sqlite3", "sqlite"),
    ],
)
def test_plain_postgresql_urls_get_the_psycopg_3_driver(raw: str, driver: str) -> None:
    url = normalize_url(raw)
    assert url.drivername == driver
    assert url.set(drivername=make_url(raw).drivername) == make_url(raw)  # nothing else changes


def test_a_sqlite_engine_creates_its_directory_and_uses_wal_foreign_keys_and_a_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nested" / "dir" / "s2s.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            pragmas = [
                connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            ]
    finally:
        engine.dispose()
    assert path.exists()
    assert pragmas == ["wal", 1, 30_000]


def test_a_read_transaction_on_sqlite_neither_waits_for_nor_blocks_a_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's2s.sqlite3'}"
    migrate.upgrade(url)
    writer, reader = make_engine(url), make_engine(url, busy_timeout_ms=0)  # a wait for the lock would fail
    try:
        with transaction(writer) as db:  # holds the write lock (BEGIN IMMEDIATE) while the reader reads
            conv.create_conversation(db, owner=OWNER, title="first")
            with read_transaction(reader) as read:
                assert read.scalars(select(Conversation.title)).all() == []  # the last committed state
            with transaction(reader) as blocked, pytest.raises(Exception, match="locked"):
                blocked.execute(select(1))  # a plain transaction does wait for the lock (here: fails at once)
        with read_transaction(reader) as read:
            assert read.scalars(select(Conversation.title)).all() == ["first"]
    finally:
        writer.dispose()
        reader.dispose()


def test_connections_opening_a_new_sqlite_file_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    # SQLite's switch to WAL ignores the busy timeout; without a retry about 1 round in 20 fails here.
    failures: list[BaseException] = []

    def connect(engine: Engine, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except BaseException as error:  # collected and asserted below, not lost in the thread
            failures.append(error)

    for round_index in range(80):
        engines = [make_engine(f"sqlite:///{tmp_path / f'{round_index}.sqlite3'}") for _ in range(4)]
        barrier = threading.Barrier(len(engines))
        threads = [threading.Thread(target=connect, args=(engine, barrier)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for engine in engines:
            engine.dispose()
    assert failures == []


def test_transaction_commits_when_the_block_ends(fresh_url: URL) -> None:
    migrate.upgrade(fresh_url)
    engine = make_engine(fresh_url)
    try:
        with transaction(engine) as db:
            conversation = conv.create_conversation(db, owner=OWNER, title="kept")
        with transaction(engine) as db:
            title = conv.get_conversation(db, conversation_id=conversation.id, owner=OWNER).title
    finally:
        engine.dispose()
    assert title == "kept" and conversation.title == "kept"  # still readable after commit


def test_transaction_rolls_back_when_the_block_raises(fresh_url: URL) -> None:
    migrate.upgrade(fresh_url)
    engine = make_engine(fresh_url)
    try:
        with pytest.raises(RuntimeError), transaction(engine) as db:
            conv.create_conversation(db, owner=OWNER, title="lost")
            raise RuntimeError("handler failed")
        with session_factory(engine)() as db:
            titles = db.scalars(select(Conversation.title)).all()
    finally:
        engine.dispose()
    assert titles == []


def test_timestamps_come_back_timezone_aware_in_utc(db: Session) -> None:
    paris_noon = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    conversation = conv.create_conversation(db, owner=OWNER)
    conversation.created_at = paris_noon
    db.flush()
    db.expire_all()
    loaded = conv.get_conversation(db, conversation_id=conversation.id, owner=OWNER).created_at
    assert loaded == paris_noon and loaded.tzinfo is not None and loaded.utcoffset() == timedelta(0)
    assert loaded.hour == 10 and loaded.astimezone(UTC) == loaded


def test_a_naive_timestamp_is_refused(db: Session) -> None:
    conversation = conv.create_conversation(db, owner=OWNER)
    conversation.updated_at = datetime(2024, 5, 1, 12, 0)
    with pytest.raises(Exception, match="naive datetime"), db.begin_nested():
        db.flush()


def test_sessions_share_one_session_class_and_bind_to_their_own_engine(tmp_path: Path) -> None:
    first = make_engine(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    second = make_engine(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    try:
        with transaction(first) as a, transaction(second) as b:
            assert a.get_bind() is first and b.get_bind() is second
            assert type(a) is type(b)  # not a new Session subclass per transaction
        with session_factory(second)() as c:
            assert c.get_bind() is second and type(c) is type(a)
    finally:
        first.dispose()
        second.dispose()
    dropped = weakref.ref(first)
    del first, a
    gc.collect()
    assert dropped() is None  # nothing keeps an engine alive
