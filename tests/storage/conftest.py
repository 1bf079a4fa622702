"""Fixtures for the storage tests: every test runs on SQLite, and again on PostgreSQL when DATABASE_URL names one.

`db` is a Session inside a transaction that is rolled back after the test, on a schema migrated once per run.
`fresh_url` is an empty database of its own (a new SQLite file, or a new PostgreSQL schema) for tests that
commit: migrations, transaction(), several processes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from storage import migrate
from storage.db import make_engine, normalize_url
from storage.limits import Limits

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.db)]
OWNER = "alice"
OTHER_OWNER = "mallory"
SMALL_LIMITS = Limits(max_message_chars=50, max_question_chars=40, max_passage_chars=200, max_batch_items=5)


def postgres_url() -> URL | None:
    """DATABASE_URL if it names PostgreSQL (e.g. postgresql://postgres@127.0.0.1:5432/test), else None."""
    raw = os.environ.get("DATABASE_URL", "")
    if not raw:
        return None
    url = normalize_url(raw)
    return url if url.get_backend_name() == "postgresql" else None


@contextmanager
def empty_database(backend: str, directory: Path) -> Iterator[URL]:
    """A URL to an empty database: a new SQLite file, or a new schema (via search_path) in DATABASE_URL's."""
    if backend == "sqlite":
        yield make_url(f"sqlite:///{directory / 's2s.sqlite3'}")
        return
    base = postgres_url()
    if base is None:
        pytest.skip("DATABASE_URL does not name a PostgreSQL database")
    schema = f"s2s_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield base.update_query_dict({"options": f"-csearch_path={schema}"})
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    with empty_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="session", params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with empty_database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A Session whose work is rolled back after the test (repository functions never commit)."""
    with engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@pytest.fixture
def limits() -> Limits:
    return SMALL_LIMITS
