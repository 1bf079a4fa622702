"""Engines and transactions: the only code that opens database connections or commits.

`make_engine(url)` works for SQLite files (the default) and PostgreSQL (real deployments) alike. For SQLite it
turns on WAL, a busy timeout and foreign keys, and starts every transaction with BEGIN IMMEDIATE, so two
processes writing at once wait for each other instead of failing with "database is locked" half-way through a
transaction. `transaction(engine)` is where a UI handler or a task commits; repository functions never do.
`read_transaction(engine)` is for polls and listings that write nothing: on SQLite it begins a deferred
transaction, which in WAL mode neither waits for a writer nor makes one wait.
Creating an engine is left to the process that uses it (after a fork, see workers/runtime.py); nothing here
runs at import.
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, cast

from sqlalchemy import ColumnElement, Engine, create_engine, event, update
from sqlalchemy.engine import URL, CursorResult, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str | URL) -> URL:
    """Parse `url`; plain `postgresql://` (or `postgres://`) URLs get the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    """An engine for `url`; for a SQLite file, its directory is created if missing, and a transaction waits up to
    `busy_timeout_ms` for another process's write lock before it fails with OperationalError."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)
    event.listen(engine, "connect", partial(_configure_sqlite_connection, busy_timeout_ms=busy_timeout_ms))
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any, *, busy_timeout_ms: int) -> None:
    # Take BEGIN away from the sqlite3 driver (it skips it before SELECT and DDL); `_begin_immediate` emits it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    # Switching a new database file to WAL takes an exclusive lock without waiting on the busy timeout, so
    # processes that open a brand-new file at the same moment get "database is locked"; wait and retry.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


_READ_ONLY = "s2s_read_only"  # execution option of read_transaction's connections


def _begin_immediate(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front (waiting up to the busy timeout). A deferred transaction that read
    # first and writes later fails at once with SQLITE_BUSY when another process committed in between; one that
    # only reads (read_transaction) reads a snapshot and needs no lock.
    read_only = connection.get_execution_options().get(_READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


# One Session class for every engine, bound per session: a sessionmaker defines a new Session subclass, and
# SQLAlchemy sets up event dispatch for each new class (about 0.3 ms), which a factory made per transaction
# paid on every request.
_Session = sessionmaker(expire_on_commit=False)


def session_factory(engine: Engine) -> Callable[[], Session]:
    """Sessions on `engine` whose objects stay readable after commit (handlers read ids and fields after the block)."""
    return partial(_Session, bind=engine)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """Yield a Session in a transaction: commit when the block ends, roll back if it raises."""
    with _Session(bind=engine) as db, db.begin():
        yield db


_read_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Session]:
    """Yield a Session for reads only (a poll, a listing); it is rolled back when the block ends. On SQLite the
    transaction is deferred: it takes no write lock, so a UI or CLI polling a row never queues behind a worker's
    write, nor holds one up."""
    read_engine = _read_engines.get(engine)
    if read_engine is None:  # the same pool and events, with the option _begin_immediate reads
        read_engine = _read_engines[engine] = engine.execution_options(**{_READ_ONLY: True})
    with _Session(bind=read_engine) as db:  # autobegins on the first read; closing rolls back
        yield db


def update_rows(db: Session, model: type[Any], *criteria: ColumnElement[bool], **values: Any) -> int:
    """UPDATE `model` SET values WHERE criteria; return how many rows matched.

    With a status among the criteria this is a compare-and-set: of two racing writers (or a redelivered
    task) only the first finds the row still in that status, on SQLite and PostgreSQL alike.

    Objects of `model` this session already loaded are expired rather than synchronised ("fetch" would cost an
    extra SELECT per UPDATE, about 1.3 ms of a 9 ms answer on SQLite): they reload when next read.
    """
    statement = update(model).where(*criteria).values(**values).execution_options(synchronize_session=False)
    matched = cast(CursorResult[Any], db.execute(statement)).rowcount
    for loaded in [obj for obj in db.identity_map.values() if isinstance(obj, model)]:
        db.expire(loaded)
    return matched


def finish_pending(db: Session, model: type[Any], *, row_id: object, values: dict[str, Any]) -> bool:
    """Write `values` to the row `row_id` of `model` only if it is still pending (a question or a batch item
    that a redelivered task, another worker or the user may have finished first); True if this call did."""
    return update_rows(db, model, model.id == row_id, model.status == "pending", **values) == 1
