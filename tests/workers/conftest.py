"""Fixtures for the worker tests: the tiny real checkpoint, a migrated SQLite file, a Serving without Celery."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from storage import migrate
from storage.db import make_engine
from workers.jobs import Serving

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = REPO_ROOT / "tests" / "fixtures" / "tiny-model"
OWNER = "tester"
PASSAGE = "Bob was born in Oslo. He lives in Paris."
QUESTION = "Where was Bob born?"


@pytest.fixture(scope="session")
def model_set() -> Any:
    from model.inference import ModelSet

    model = ModelSet.load(TINY_MODEL, device="cpu")
    model.warm_up()
    return model


@pytest.fixture
def serving(model_set: Any) -> Serving:
    return Serving(model=model_set, decoder=model_set, batch_decoder=model_set, max_attempts=3)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 's2s.sqlite3'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()
