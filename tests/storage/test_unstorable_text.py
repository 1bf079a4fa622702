"""Characters a database cannot store (NUL, lone surrogates) are refused the same way on SQLite and PostgreSQL.

PostgreSQL refuses NUL in text with a DataError that reached users as a traceback; SQLite stored it. Both now
raise UnstorableText from storage's own check, before anything is written.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import batch_jobs, questions
from storage import conversations as conv
from storage.errors import UnstorableText
from storage.limits import Limits
from storage.models import QAJob, Turn
from tests.storage.conftest import OWNER

UNSTORABLE = ["hello\x00world", "\x00", "bad \udcff byte", "half \ud83d pair"]
PASSAGE = "Bob was born in Oslo."


@pytest.mark.parametrize("text", UNSTORABLE)
def test_a_chat_message_with_an_unstorable_character_is_rejected_and_nothing_stored(
    db: Session, limits: Limits, text: str
) -> None:
    conversation_id = conv.create_conversation(db, owner=OWNER).id
    with pytest.raises(UnstorableText) as error:
        conv.add_user_turn(db, conversation_id=conversation_id, owner=OWNER, text=text, limits=limits)
    assert error.value.field == "message" and "cannot be stored" in str(error.value)
    assert db.scalar(select(func.count()).select_from(Turn)) == 0


def test_the_rejection_names_the_character_and_its_position(db: Session, limits: Limits) -> None:
    conversation_id = conv.create_conversation(db, owner=OWNER).id
    with pytest.raises(UnstorableText) as error:
        conv.add_user_turn(db, conversation_id=conversation_id, owner=OWNER, text="ab\x00c", limits=limits)
    assert "NUL" in str(error.value) and "U+0000" in str(error.value) and "position 3" in str(error.value)


@pytest.mark.parametrize("text", UNSTORABLE)
def test_a_question_or_passage_with_an_unstorable_character_is_rejected(
    db: Session, limits: Limits, text: str
) -> None:
    with pytest.raises(UnstorableText):
        questions.upsert_passage(db, text=text, limits=limits)
    passage_id = questions.upsert_passage(db, text=PASSAGE, limits=limits)
    with pytest.raises(UnstorableText):
        questions.create_question(db, owner=OWNER, passage_id=passage_id, question=text, limits=limits)


@pytest.mark.parametrize("text", UNSTORABLE)
def test_a_batch_item_with_an_unstorable_character_rejects_the_job_before_anything_is_stored(
    db: Session, limits: Limits, text: str
) -> None:
    items = [
        {"item_key": "a", "question": "Where?", "passage": PASSAGE},
        {"item_key": "b", "question": text, "passage": PASSAGE},
    ]
    with pytest.raises(UnstorableText) as error:
        batch_jobs.create_job(db, owner=OWNER, filename="f.jsonl", items=items, limits=limits)
    assert "'b'" in error.value.field
    assert db.scalar(select(func.count()).select_from(QAJob)) == 0


def test_a_title_or_filename_with_a_nul_is_rejected(db: Session, limits: Limits) -> None:
    with pytest.raises(UnstorableText):
        conv.create_conversation(db, owner=OWNER, title="chat\x00")
    items = [{"item_key": "a", "question": "Where?", "passage": PASSAGE}]
    with pytest.raises(UnstorableText):
        batch_jobs.create_job(db, owner=OWNER, filename="f\x00.jsonl", items=items, limits=limits)


def test_control_characters_a_database_can_store_are_kept_as_sent(db: Session, limits: Limits) -> None:
    text = "tab\there \x1b[31mred\x1b[0m \u202eltr \x7f end"
    conversation_id = conv.create_conversation(db, owner=OWNER).id
    turns = conv.add_user_turn(db, conversation_id=conversation_id, owner=OWNER, text=text, limits=limits)
    db.expire_all()
    assert conv.get_turn(db, turn_id=turns.user_turn_id, owner=OWNER).text == text
