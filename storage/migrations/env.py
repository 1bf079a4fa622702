"""Alembic environment for the storage schema.

The URL comes from `config.attributes["url"]` (set by storage.migrate), else the ini's sqlalchemy.url, else
Settings (DATABASE_URL or the SQLite file in S2S_DATA_DIR). Online runs use the connection storage.migrate
hands over, or open one the same way (migration lock held, SQLite foreign keys off while tables are rebuilt).
Logging is left to the caller: configuring it here would reset a running service's loggers.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import URL, Connection

from settings import get_settings
from storage.db import normalize_url
from storage.migrate import locked_connection
from storage.models import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> URL:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return normalize_url(url or get_settings().resolved_database_url)


def run_migrations(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=is_sqlite,  # SQLite cannot ALTER most things; batch mode rebuilds the table
        transactional_ddl=True,  # also on SQLite: storage.db emits BEGIN itself, so DDL is transactional there
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    url = database_url()
    context.configure(
        url=url.render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.get_backend_name() == "sqlite",
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    with locked_connection(database_url()) as connection:
        run_migrations(connection)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
