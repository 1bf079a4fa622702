"""Alembic migrations up and down on each backend, and the `s2s db` commands."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import URL

from cli import main as s2s
from settings import get_settings
from storage import migrate
from storage.db import make_engine
from storage.models import Base

TABLES = {"conversations", "turns", "passages", "questions", "qa_jobs", "qa_job_items"}


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
