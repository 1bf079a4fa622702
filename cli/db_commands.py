"""`s2s db upgrade|downgrade|current`: schema migrations for the database named by DATABASE_URL.

Without DATABASE_URL the SQLite file in S2S_DATA_DIR is used. Imports of storage (SQLAlchemy, Alembic, drivers)
happen inside the handlers, so `s2s --help` stays instant.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("db", help="database schema migrations (DATABASE_URL)")
    commands = parser.add_subparsers(dest="db_command", required=True)

    upgrade = commands.add_parser("upgrade", help="migrate the schema up (to the newest revision by default)")
    upgrade.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=_migrate)

    downgrade = commands.add_parser("downgrade", help="migrate the schema down")
    downgrade.add_argument("revision", help='target revision: an id, "-1", or "base" (drops every table)')
    downgrade.set_defaults(handler=_migrate)

    current = commands.add_parser(
        "current", help="print the database's revision and whether it is up to date"
    )
    current.set_defaults(handler=_current)


def _database_url() -> str:
    from settings import get_settings

    return get_settings().resolved_database_url


def _shown(url: str) -> str:
    from storage.db import normalize_url

    return normalize_url(url).render_as_string(hide_password=True)


def _migrate(args: argparse.Namespace) -> int:
    from storage import migrate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    url = _database_url()
    step = {"upgrade": migrate.upgrade, "downgrade": migrate.downgrade}[args.db_command]
    step(url, args.revision)
    print(f"{_shown(url)}: at revision {migrate.current(url) or 'base (empty)'}")
    return 0


def _current(args: argparse.Namespace) -> int:
    from storage import migrate

    url = _database_url()
    revision = migrate.current(url)
    head = migrate.head()
    state = "up to date" if revision == head else f"behind (newest is {head}); run `s2s db upgrade`"
    print(f"{_shown(url)}: revision {revision or 'none'}, {state}")
    return 0
