"""Property-based tests (hypothesis) of the storage layer, on SQLite and on PostgreSQL when DATABASE_URL names
one: whatever text arrives, it is stored exactly as sent and read back the same, or refused with a storage
error before anything reaches the database (which then still works: a DataError there would break the
transaction the next example runs in)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import batch_jobs, conversations, questions
from storage.errors import DuplicateKey, EmptyInput, InputTooLong, NotFound, StorageError, UnstorableText
from storage.limits import Limits, unstorable_reason
from storage.models import QAJob, Turn
from tests.storage.conftest import SMALL_LIMITS

# Any code point, surrogates included (a str from a JSON "\ud800" escape holds one), with the awkward ones
# drawn more often than chance would.
AWKWARD = [
    "\x00",
    "\ud800",
    "\udfff",
    "\x1b",
    "\u202e",
    "\ufeff",
    "\u2028",
    "\r",
    "\t",
    " ",
    "'",
    '"',
    "\\",
    "%",
    "<",
    ";",
    "🙂",
    "é",
    "\u0301",
    "中",
]
ANY_TEXT = st.text(
    st.one_of(st.characters(codec=None), st.characters(categories=["Cs"]), st.sampled_from(AWKWARD)),
    max_size=60,
)
STORABLE = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40).filter(
    lambda text: not text.isspace()
)
PROPERTIES = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _owner() -> str:
    return f"prop-{uuid.uuid4().hex}"


def _count(db: Session, model: type, owner: str) -> int:
    return int(db.scalar(select(func.count()).select_from(model).where(model.owner == owner)) or 0)


@PROPERTIES
@given(text=ANY_TEXT)
def test_a_message_is_stored_exactly_as_sent_or_refused_with_nothing_stored(db: Session, text: str) -> None:
    owner = _owner()
    conversation_id = conversations.create_conversation(db, owner=owner).id
    try:
        conversations.add_user_turn(
            db, conversation_id=conversation_id, owner=owner, text=text, limits=SMALL_LIMITS
        )
    except (EmptyInput, InputTooLong, UnstorableText) as refused:
        expected = (
            EmptyInput
            if not text or text.isspace()
            else InputTooLong
            if len(text) > SMALL_LIMITS.max_message_chars
            else UnstorableText
        )
        assert isinstance(refused, expected), (text, refused)
        assert (
            db.scalar(select(func.count()).select_from(Turn).where(Turn.conversation_id == conversation_id))
            == 0
        )
        return
    assert text.strip() and len(text) <= SMALL_LIMITS.max_message_chars and unstorable_reason(text) is None
    db.expire_all()  # read back from the database, not the session's objects
    stored = conversations.list_turns(db, conversation_id=conversation_id, owner=owner)
    assert [turn.text for turn in stored] == [text, None]


@PROPERTIES
@given(keys=st.lists(STORABLE, min_size=1, max_size=6), questions=st.data())
def test_a_job_keeps_its_items_in_order_exactly_or_refuses_a_repeated_key(
    db: Session, keys: list[str], questions: st.DataObject
) -> None:
    owner = _owner()
    limits = Limits(max_message_chars=50, max_question_chars=40, max_passage_chars=200, max_batch_items=10)
    items = [
        {"item_key": key, "question": questions.draw(STORABLE), "passage": questions.draw(STORABLE)}
        for key in keys
    ]
    if len(set(keys)) < len(keys):
        with pytest.raises(DuplicateKey):
            batch_jobs.create_job(db, owner=owner, filename="p.jsonl", items=items, limits=limits)
        assert _count(db, QAJob, owner) == 0
        return
    job_id = batch_jobs.create_job(db, owner=owner, filename="p.jsonl", items=items, limits=limits)
    db.expire_all()
    rows = batch_jobs.export_results(db, job_id=job_id, owner=owner)
    assert [(row["id"], row["question"]) for row in rows] == [(i["item_key"], i["question"]) for i in items]
    with pytest.raises(NotFound):
        batch_jobs.export_results(db, job_id=job_id, owner=_owner())


@PROPERTIES
@given(first=STORABLE, second=STORABLE)
def test_one_passage_text_is_stored_once_and_two_texts_twice(db: Session, first: str, second: str) -> None:
    limits = Limits(max_message_chars=50, max_question_chars=40, max_passage_chars=200, max_batch_items=10)
    ids = [questions.upsert_passage(db, text=text, limits=limits) for text in (first, second, first)]
    assert ids[0] == ids[2] and (ids[0] == ids[1]) == (first == second)


@PROPERTIES
@given(owner=ANY_TEXT, other=ANY_TEXT)
def test_any_owner_key_sees_only_its_own_conversations(db: Session, owner: str, other: str) -> None:
    try:
        conversation_id = conversations.create_conversation(db, owner=owner).id
    except StorageError:  # an empty, overlong or unstorable owner key is refused, not stored
        assert not owner.strip() or len(owner) > 200 or unstorable_reason(owner) is not None
        return
    if other != owner:
        with pytest.raises((NotFound, StorageError)):
            conversations.get_conversation(db, conversation_id=conversation_id, owner=other)
    assert (
        conversations.get_conversation(db, conversation_id=conversation_id, owner=owner).id == conversation_id
    )


@PROPERTIES
@given(key=ANY_TEXT, owner=ANY_TEXT)
def test_any_id_or_owner_a_request_brings_is_looked_up_without_a_database_error(
    db: Session, key: str, owner: str
) -> None:
    # Found by the property above: an owner key with a NUL reached PostgreSQL in a lookup (DataError).
    assert conversations.list_conversations(db, owner=owner) == []
    assert batch_jobs.list_jobs(db, owner=owner) == []
    for lookup in (
        lambda: conversations.get_conversation(db, conversation_id=key, owner=owner),
        lambda: conversations.get_turn(db, turn_id=1, owner=owner),
        lambda: batch_jobs.export_results(db, job_id=key, owner=owner),
        lambda: questions.get_question(db, question_id=key, owner=owner),
    ):
        with pytest.raises(NotFound):
            lookup()
