"""Schema migrations as functions: upgrade, downgrade, current, is_up_to_date, ensure_schema.

Every migration runs in one transaction that holds a migration lock, so several processes may call
`ensure_schema` at start-up at once: the first migrates, the others wait and then find nothing to do.
On PostgreSQL the lock is a transaction-scoped advisory lock; on SQLite it is the database write lock that
storage.db's BEGIN IMMEDIATE takes. SQLite foreign keys are off during a migration (table rebuilds in batch
mode would otherwise cascade deletes) and checked before commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.engine import URL, Connection

from storage.db import SQLITE_BUSY_TIMEOUT_MS, make_engine, normalize_url

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
# pg_advisory_xact_lock key: the first 8 bytes of sha256(b"s2s-service:migrations") as a signed integer.
MIGRATION_LOCK_KEY = 1462537585873866241


def alembic_config(url: str | URL, connection: Connection | None = None) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["url"] = normalize_url(url)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def locked_connection(
    url: str | URL, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS
) -> Iterator[Connection]:
    """A connection in a transaction holding the migration lock; commits when the block ends."""
    engine = make_engine(url, busy_timeout_ms=busy_timeout_ms)
    try:
        with engine.connect() as connection:
            is_sqlite = connection.dialect.name == "sqlite"
            if is_sqlite:
                # Must be set outside a transaction, hence on the driver connection before BEGIN.
                connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
            try:
                with connection.begin():
                    if connection.dialect.name == "postgresql":
                        connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
                    yield connection
                    if is_sqlite:
                        _check_sqlite_foreign_keys(connection)
            finally:
                if is_sqlite:
                    connection.connection.driver_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]
    finally:
        engine.dispose()


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left rows that break foreign keys: {broken[:5]}")


def upgrade(url: str | URL, revision: str = "head") -> None:
    with locked_connection(url) as connection:
        command.upgrade(alembic_config(url, connection), revision)


def downgrade(url: str | URL, revision: str) -> None:
    """Downgrade to `revision` (a revision id, "-1", or "base" for an empty database)."""
    with locked_connection(url) as connection:
        command.downgrade(alembic_config(url, connection), revision)


def head() -> str:
    """The newest revision the code ships."""
    revision = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if revision is None:
        raise RuntimeError("storage/migrations has no revisions")
    return revision


def current(url: str | URL, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> str | None:
    """The database's revision; None for a database that was never migrated."""
    engine = make_engine(url, busy_timeout_ms=busy_timeout_ms)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def is_up_to_date(url: str | URL, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> bool:
    return current(url, busy_timeout_ms=busy_timeout_ms) == head()


def ensure_schema(url: str | URL, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> bool:
    """Upgrade the database to the newest revision if it is behind; True if this call migrated it.

    The service calls this at start-up. The first check takes no lock; when the database is behind, the check
    is repeated under the migration lock, so of several processes starting at once exactly one migrates.
    On SQLite each step waits up to `busy_timeout_ms` for another process's lock.
    """
    if is_up_to_date(url, busy_timeout_ms=busy_timeout_ms):
        return False
    with locked_connection(url, busy_timeout_ms=busy_timeout_ms) as connection:
        if MigrationContext.configure(connection).get_current_revision() == head():
            return False
        command.upgrade(alembic_config(url, connection), "head")
        return True
