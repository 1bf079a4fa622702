"""Fixtures for the UI tests: a migrated SQLite file in tmp, Settings pointing at it, and a fake of the few
workers.client functions the handlers call (the single boundary to the queue); for the browser tests, the
running service, a Chromium and a page on it, one of each per test module (tests/ui/browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from settings import get_settings
from storage import migrate
from tests.ui.browser import Service, chromium, new_page, running_service
from ui import handlers

OWNER = "anon:" + "a" * 32
OTHER = "anon:" + "b" * 32

# An answer's attention record as a Seq2Seq worker stores it: SentencePiece pieces, one output row.
PASSAGE = "Bob was born in Oslo. Later Bob moved to Lima for work."
SOURCE = [
    "<rc>",
    "▁Where",
    "▁was",
    "▁Bob",
    "▁born",
    "?",
    "<sep>",
    "▁B",
    "o",
    "b",
    "▁was",
    "▁born",
    "▁",
    "in",
    "▁Oslo",
    ".",
    "▁Later",
    "▁Bob",
    "▁moved",
    "▁to",
    "▁Lima",
    "▁for",
    "▁work",
    ".",
]
ATTENTION = {
    "source_tokens": SOURCE,
    "output_tokens": ["▁Oslo"],
    "attention": [[0.9 if token == "▁Oslo" else 0.1 / (len(SOURCE) - 1) for token in SOURCE]],
    "p_gen": [0.1],
    "span": [16, 20],
}


class FakeQueue:
    """Records what was enqueued; `workers` is what list_workers reports."""

    def __init__(self) -> None:
        self.replies: list[int] = []
        self.questions: list[str] = []
        self.jobs: list[str] = []
        self.cancelled: list[str] = []
        self.workers: list[dict[str, Any]] = [
            {
                "hostname": "s2s-1@box",
                "versions": {"rc/en": "rc-en@1234"},
                "device": "cpu",
                "queues": ["interactive", "batch"],
                "last_seen": "2025-01-01T00:00:00+00:00",
            }
        ]
        self.fail_with: Exception | None = None

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def enqueue_reply(self, turn_id: int) -> str:
        self._maybe_fail()
        self.replies.append(turn_id)
        return f"task-{turn_id}"

    def enqueue_question(self, question_id: str) -> str:
        self._maybe_fail()
        self.questions.append(question_id)
        return f"task-{question_id}"

    def enqueue_job(self, job_id: str) -> str:
        self._maybe_fail()
        self.jobs.append(job_id)
        return f"task-{job_id}"

    def require_broker(self) -> None:
        self._maybe_fail()

    def cancel_job(self, job_id: str) -> int:
        self.cancelled.append(job_id)
        return 1

    def list_workers(self) -> list[dict[str, Any]]:
        self._maybe_fail()
        return self.workers

    def queue_depths(self) -> dict[str, int]:
        self._maybe_fail()
        return {"interactive": 0, "batch": 2}


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 's2s.sqlite3'}"
    migrate.upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("S2S_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("S2S_MAX_MESSAGE_CHARS", "200")
    get_settings.cache_clear()
    handlers._engine_for.cache_clear()
    yield url
    for engine in _cached_engines():
        engine.dispose()
    handlers._engine_for.cache_clear()
    get_settings.cache_clear()


def _cached_engines() -> list[Any]:
    return [handlers.engine()] if handlers._engine_for.cache_info().currsize else []


@pytest.fixture
def queue(database_url: str, monkeypatch: pytest.MonkeyPatch) -> FakeQueue:
    from workers import client

    fake = FakeQueue()
    for name in (
        "enqueue_reply",
        "enqueue_question",
        "enqueue_job",
        "require_broker",
        "cancel_job",
        "list_workers",
        "queue_depths",
    ):
        monkeypatch.setattr(client, name, getattr(fake, name))
    return fake


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("ui-e2e")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(service: Service) -> Iterator[Any]:
    with chromium() as opened:
        yield opened


@pytest.fixture(scope="module")
def page(browser: Any, service: Service) -> Any:
    """A page in its own browser context (one owner key), shared by the module's tests in file order."""
    return new_page(browser, service)
