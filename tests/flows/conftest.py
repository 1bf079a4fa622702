"""Fixtures for the request-flow tests: the UI tests' migrated SQLite file (`database_url`, Settings pointing
at it) and their fake of the workers.client boundary (`queue`), so the flows and the commands that call them
run against a real database without Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from cli import service_commands
from storage.db import make_engine
from tests.ui.conftest import database_url, queue  # noqa: F401  (fixtures used by these tests)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:  # noqa: F811
    """An engine on the test database; the CLI's cached one is dropped before and after."""
    service_commands._engine_for.cache_clear()
    made = make_engine(database_url)
    yield made
    made.dispose()
    if service_commands._engine_for.cache_info().currsize:
        service_commands._engine().dispose()
    service_commands._engine_for.cache_clear()
