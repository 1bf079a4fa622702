"""Per-owner limits from the settings (storage/quotas.py), through the request flows the UI and the CLI run:
requests a minute (chat messages, questions and batch files together) and batch items waiting at once. Over a
limit, nothing is stored and the error says which limit; another owner is not held by it."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from flows import batch, chat, questions
from flows.uploads import ParsedBatch
from settings import get_settings
from storage.db import transaction
from storage.errors import OverLimit
from storage.models import QAJob, Question, Turn
from tests.ui.conftest import OTHER, OWNER, FakeQueue

PASSAGE = "Bob was born in Oslo."


def _limits(monkeypatch: pytest.MonkeyPatch, *, per_minute: int = 0, pending_items: int = 0) -> None:
    monkeypatch.setenv("S2S_OWNER_REQUESTS_PER_MINUTE", str(per_minute))
    monkeypatch.setenv("S2S_OWNER_MAX_PENDING_ITEMS", str(pending_items))
    get_settings.cache_clear()


def _rows(engine: Engine, model: type) -> int:
    with transaction(engine) as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def _job(count: int, prefix: str = "k") -> ParsedBatch:
    items = [{"item_key": f"{prefix}{i}", "question": "Where?", "passage": PASSAGE} for i in range(count)]
    return ParsedBatch(format="jsonl", items=items)


def test_requests_a_minute_count_messages_questions_and_jobs_together(
    engine: Engine, queue: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    _limits(monkeypatch, per_minute=3)
    source = lambda: engine  # noqa: E731
    sent = chat.send(source, OWNER, None, "hello")
    questions.ask(source, OWNER, PASSAGE, "Where was Bob born?")
    batch.submit(source, OWNER, _job(2), "one.jsonl")
    stored = (_rows(engine, Turn), _rows(engine, Question), _rows(engine, QAJob))
    for refused in (
        lambda: chat.send(source, OWNER, sent.conversation_id, "again"),
        lambda: questions.ask(source, OWNER, PASSAGE, "Who?"),
        lambda: batch.submit(source, OWNER, _job(1, "x"), "two.jsonl"),
    ):
        with pytest.raises(OverLimit, match="too many requests: the limit is 3 a minute"):
            refused()
    assert (_rows(engine, Turn), _rows(engine, Question), _rows(engine, QAJob)) == stored  # nothing more
    assert len(queue.replies) == 1 and len(queue.questions) == 1 and len(queue.jobs) == 1
    chat.send(source, OTHER, None, "hello")  # another owner has a minute of its own


def test_batch_items_waiting_at_once_are_limited_per_owner(
    engine: Engine, queue: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    _limits(monkeypatch, pending_items=10)
    source = lambda: engine  # noqa: E731
    batch.submit(source, OWNER, _job(6), "one.jsonl")
    with pytest.raises(OverLimit, match="6 already and 5 more would pass the limit of 10"):
        batch.submit(source, OWNER, _job(5, "x"), "two.jsonl")
    assert _rows(engine, QAJob) == 1 and len(queue.jobs) == 1
    batch.submit(source, OWNER, _job(4, "y"), "three.jsonl")  # up to the limit is fine
    batch.submit(source, OTHER, _job(10, "z"), "theirs.jsonl")


def test_the_limits_are_settings_and_zero_turns_them_off(
    engine: Engine, queue: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    get_settings.cache_clear()
    defaults = get_settings()
    assert (defaults.owner_requests_per_minute, defaults.owner_max_pending_items) == (120, 50_000)
    _limits(monkeypatch, per_minute=0, pending_items=0)
    source = lambda: engine  # noqa: E731
    for index in range(130):
        questions.ask(source, OWNER, PASSAGE, f"Question {index}?")
    assert _rows(engine, Question) == 130
