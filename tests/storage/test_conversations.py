"""Conversations and turns: owner isolation, limits, idempotent replies, history."""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from settings import get_settings
from storage import conversations as conv
from storage.errors import EmptyInput, InputTooLong, NotFound
from storage.limits import DEFAULT_LIMITS, Limits
from storage.models import Role, Turn, TurnStatus
from tests.storage.conftest import OTHER_OWNER, OWNER


def _conversation_id(db: Session, owner: str = OWNER) -> str:
    return conv.create_conversation(db, owner=owner, title="chat").id


def _exchange(
    db: Session, conversation_id: str, text: str, reply: str | None, limits: Limits
) -> conv.NewTurns:
    turns = conv.add_user_turn(db, conversation_id=conversation_id, owner=OWNER, text=text, limits=limits)
    if reply is not None:
        conv.save_reply(db, turn_id=turns.reply_turn_id, text=reply, model_version="chat@1")
    return turns


def test_new_conversation_gets_a_random_hex_id_and_utc_timestamps(db: Session) -> None:
    first = conv.create_conversation(db, owner=OWNER, title="hello", language="en")
    second = conv.create_conversation(db, owner=OWNER)
    db.expire_all()
    loaded = conv.get_conversation(db, conversation_id=first.id, owner=OWNER)
    assert len(first.id) == 32 and int(first.id, 16) >= 0 and first.id != second.id
    assert (loaded.title, loaded.language) == ("hello", "en")
    assert loaded.created_at.tzinfo is not None and loaded.created_at.utcoffset() == UTC.utcoffset(None)


def test_another_owner_cannot_read_rename_or_delete_a_conversation(db: Session) -> None:
    conversation_id = _conversation_id(db)
    with pytest.raises(NotFound):
        conv.get_conversation(db, conversation_id=conversation_id, owner=OTHER_OWNER)
    with pytest.raises(NotFound):
        conv.rename_conversation(db, conversation_id=conversation_id, owner=OTHER_OWNER, title="mine now")
    with pytest.raises(NotFound):
        conv.delete_conversation(db, conversation_id=conversation_id, owner=OTHER_OWNER)
    assert conv.get_conversation(db, conversation_id=conversation_id, owner=OWNER).title == "chat"


def test_a_missing_conversation_and_another_owners_raise_the_same_error(db: Session) -> None:
    conversation_id = _conversation_id(db)
    with pytest.raises(NotFound) as other:
        conv.get_conversation(db, conversation_id=conversation_id, owner=OTHER_OWNER)
    with pytest.raises(NotFound) as missing:
        conv.get_conversation(db, conversation_id="0" * 32, owner=OWNER)
    assert (
        type(other.value) is type(missing.value) and other.value.kind == missing.value.kind == "conversation"
    )


def test_list_conversations_shows_only_the_owners_most_recently_active_first(
    db: Session, limits: Limits
) -> None:
    older = _conversation_id(db)
    newer = _conversation_id(db)
    _conversation_id(db, owner=OTHER_OWNER)
    _exchange(db, older, "bump", None, limits)
    assert [c.id for c in conv.list_conversations(db, owner=OWNER)] == [older, newer]


def test_rename_conversation_changes_the_title_and_rejects_an_overlong_one(db: Session) -> None:
    conversation_id = _conversation_id(db)
    conv.rename_conversation(db, conversation_id=conversation_id, owner=OWNER, title="renamed")
    with pytest.raises(InputTooLong) as error:
        conv.rename_conversation(db, conversation_id=conversation_id, owner=OWNER, title="x" * 201)
    assert (error.value.limit, error.value.length) == (200, 201)
    assert conv.get_conversation(db, conversation_id=conversation_id, owner=OWNER).title == "renamed"


def test_delete_conversation_deletes_its_turns(db: Session, limits: Limits) -> None:
    conversation_id = _conversation_id(db)
    turns = _exchange(db, conversation_id, "hi", "hello", limits)
    conv.delete_conversation(db, conversation_id=conversation_id, owner=OWNER)
    db.expire_all()
    assert db.scalars(select(Turn).where(Turn.id.in_([turns.user_turn_id, turns.reply_turn_id]))).all() == []
    with pytest.raises(NotFound):
        conv.get_conversation(db, conversation_id=conversation_id, owner=OWNER)


def test_add_user_turn_stores_the_message_and_a_pending_reply_right_after_it(
    db: Session, limits: Limits
) -> None:
    conversation_id = _conversation_id(db)
    first = _exchange(db, conversation_id, "hi", "hello", limits)
    second = conv.add_user_turn(
        db, conversation_id=conversation_id, owner=OWNER, text="how are you", limits=limits
    )
    user = conv.get_turn(db, turn_id=second.user_turn_id, owner=OWNER)
    reply = conv.get_turn(db, turn_id=second.reply_turn_id, owner=OWNER)
    assert second.created and first.reply_turn_id < second.user_turn_id
    assert (user.role, user.status, user.text, user.position) == (
        Role.USER,
        TurnStatus.DONE,
        "how are you",
        2,
    )
    assert (reply.role, reply.status, reply.text, reply.position) == (
        Role.ASSISTANT,
        TurnStatus.PENDING,
        None,
        3,
    )


def test_sending_again_with_the_same_client_request_id_returns_the_first_turns(
    db: Session, limits: Limits
) -> None:
    conversation_id = _conversation_id(db)
    first = conv.add_user_turn(
        db, conversation_id=conversation_id, owner=OWNER, text="hi", client_request_id="req-1", limits=limits
    )
    again = conv.add_user_turn(
        db, conversation_id=conversation_id, owner=OWNER, text="hi", client_request_id="req-1", limits=limits
    )
    assert (again.user_turn_id, again.reply_turn_id, again.created) == (
        first.user_turn_id,
        first.reply_turn_id,
        False,
    )
    assert len(conv.list_turns(db, conversation_id=conversation_id, owner=OWNER)) == 2


def test_another_owner_cannot_add_to_read_or_retry_turns_of_a_conversation(
    db: Session, limits: Limits
) -> None:
    conversation_id = _conversation_id(db)
    turns = _exchange(db, conversation_id, "hi", None, limits)
    conv.fail_reply(db, turn_id=turns.reply_turn_id, error="boom")
    with pytest.raises(NotFound):
        conv.add_user_turn(db, conversation_id=conversation_id, owner=OTHER_OWNER, text="hi", limits=limits)
    with pytest.raises(NotFound):
        conv.get_turn(db, turn_id=turns.user_turn_id, owner=OTHER_OWNER)
    with pytest.raises(NotFound):
        conv.list_turns(db, conversation_id=conversation_id, owner=OTHER_OWNER)
    with pytest.raises(NotFound):
        conv.retry_reply(db, turn_id=turns.reply_turn_id, owner=OTHER_OWNER)
    assert conv.get_turn(db, turn_id=turns.reply_turn_id, owner=OWNER).status is TurnStatus.FAILED


def test_a_message_over_the_limit_is_rejected_with_the_limit_and_its_length(
    db: Session, limits: Limits
) -> None:
    conversation_id = _conversation_id(db)
    with pytest.raises(InputTooLong) as error:
        conv.add_user_turn(db, conversation_id=conversation_id, owner=OWNER, text="x" * 51, limits=limits)
    assert (error.value.field, error.value.limit, error.value.length) == ("message", 50, 51)
    assert "51" in str(error.value) and "50" in str(error.value)
    assert conv.list_turns(db, conversation_id=conversation_id, owner=OWNER) == []


def test_a_message_at_the_limit_is_stored_whole(db: Session, limits: Limits) -> None:
    conversation_id = _conversation_id(db)
    turns = conv.add_user_turn(db, conversation_id=conversation_id, owner=OWNER, text="y" * 50, limits=limits)
    assert conv.get_turn(db, turn_id=turns.user_turn_id, owner=OWNER).text == "y" * 50


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_or_blank_message_is_rejected(db: Session, limits: Limits, text: str) -> None:
    conversation_id = _conversation_id(db)
    with pytest.raises(EmptyInput):
        conv.add_user_turn(db, conversation_id=conversation_id, owner=OWNER, text=text, limits=limits)


def test_without_explicit_limits_storage_uses_the_default_limits_not_the_environment(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S2S_MAX_MESSAGE_CHARS", "5")  # what the flows pass on; storage itself never reads it
    get_settings.cache_clear()
    try:
        conversation_id = _conversation_id(db)
        conv.add_user_turn(db, conversation_id=conversation_id, owner=OWNER, text="123456")
        with pytest.raises(InputTooLong) as error:
            conv.add_user_turn(
                db,
                conversation_id=conversation_id,
                owner=OWNER,
                text="x" * (DEFAULT_LIMITS.max_message_chars + 1),
            )
    finally:
        get_settings.cache_clear()
    assert error.value.limit == DEFAULT_LIMITS.max_message_chars == 1000


def test_an_empty_owner_is_rejected(db: Session) -> None:
    with pytest.raises(EmptyInput):
        conv.create_conversation(db, owner=" ")


def test_history_for_gives_the_last_done_turns_before_the_reply_oldest_first(
    db: Session, limits: Limits
) -> None:
    conversation_id = _conversation_id(db)
    _exchange(db, conversation_id, "one", "two", limits)
    failed = _exchange(db, conversation_id, "three", None, limits)
    conv.fail_reply(db, turn_id=failed.reply_turn_id, error="model crashed")
    current = _exchange(db, conversation_id, "four", None, limits)
    _exchange(db, conversation_id, "later", "not history", limits)
    assert conv.history_for(db, turn_id=current.reply_turn_id, max_turns=10) == [
        "one",
        "two",
        "three",
        "four",
    ]
    assert conv.history_for(db, turn_id=current.reply_turn_id, max_turns=2) == ["three", "four"]


def test_history_for_an_unknown_turn_is_not_found(db: Session) -> None:
    with pytest.raises(NotFound):
        conv.history_for(db, turn_id=10**9, max_turns=4)


def test_save_reply_writes_once_and_a_redelivered_save_changes_nothing(db: Session, limits: Limits) -> None:
    turns = _exchange(db, _conversation_id(db), "hi", None, limits)
    first = conv.save_reply(
        db,
        turn_id=turns.reply_turn_id,
        text="hello",
        model_version="chat@1",
        decoding={"beam_size": 5, "length_penalty": 0.6},
        latency_ms=12.5,
    )
    second = conv.save_reply(db, turn_id=turns.reply_turn_id, text="other", model_version="chat@2")
    reply = conv.get_turn(db, turn_id=turns.reply_turn_id, owner=OWNER)
    assert (first, second) == (True, False)
    assert (reply.status, reply.text, reply.model_version) == (TurnStatus.DONE, "hello", "chat@1")
    assert reply.decoding == {"beam_size": 5, "length_penalty": 0.6} and reply.latency_ms == 12.5
    assert reply.finished_at is not None


def test_a_failed_reply_is_not_overwritten_by_a_late_answer(db: Session, limits: Limits) -> None:
    turns = _exchange(db, _conversation_id(db), "hi", None, limits)
    assert conv.fail_reply(db, turn_id=turns.reply_turn_id, error="timeout")
    assert not conv.save_reply(db, turn_id=turns.reply_turn_id, text="late", model_version="chat@1")
    assert not conv.fail_reply(db, turn_id=turns.reply_turn_id, error="again")
    reply = conv.get_turn(db, turn_id=turns.reply_turn_id, owner=OWNER)
    assert (reply.status, reply.text, reply.error) == (TurnStatus.FAILED, None, "timeout")


def test_save_reply_never_rewrites_the_users_message(db: Session, limits: Limits) -> None:
    turns = _exchange(db, _conversation_id(db), "hi", None, limits)
    assert not conv.save_reply(db, turn_id=turns.user_turn_id, text="hacked", model_version="chat@1")
    assert conv.get_turn(db, turn_id=turns.user_turn_id, owner=OWNER).text == "hi"


def test_retry_reply_puts_a_failed_reply_back_to_pending_once(db: Session, limits: Limits) -> None:
    turns = _exchange(db, _conversation_id(db), "hi", None, limits)
    conv.fail_reply(db, turn_id=turns.reply_turn_id, error="timeout")
    assert conv.retry_reply(db, turn_id=turns.reply_turn_id, owner=OWNER)
    assert not conv.retry_reply(db, turn_id=turns.reply_turn_id, owner=OWNER)
    reply = conv.get_turn(db, turn_id=turns.reply_turn_id, owner=OWNER)
    assert (reply.status, reply.error, reply.finished_at) == (TurnStatus.PENDING, None, None)
    assert conv.save_reply(db, turn_id=turns.reply_turn_id, text="hello", model_version="chat@1")


def test_retry_reply_of_a_done_reply_returns_false_and_keeps_the_text(db: Session, limits: Limits) -> None:
    turns = _exchange(db, _conversation_id(db), "hi", "hello", limits)
    assert not conv.retry_reply(db, turn_id=turns.reply_turn_id, owner=OWNER)
    assert conv.get_turn(db, turn_id=turns.reply_turn_id, owner=OWNER).text == "hello"


def test_turn_status_tells_a_worker_whether_the_reply_is_still_wanted(db: Session, limits: Limits) -> None:
    turns = _exchange(db, _conversation_id(db), "hi", None, limits)
    before = conv.turn_status(db, turn_id=turns.reply_turn_id)
    conv.save_reply(db, turn_id=turns.reply_turn_id, text="hello", model_version="chat@1")
    assert (before, conv.turn_status(db, turn_id=turns.reply_turn_id)) == (
        TurnStatus.PENDING,
        TurnStatus.DONE,
    )
    with pytest.raises(NotFound):
        conv.turn_status(db, turn_id=10**9)


def test_list_turns_returns_the_conversation_in_order(db: Session, limits: Limits) -> None:
    conversation_id = _conversation_id(db)
    _exchange(db, conversation_id, "hi", "hello", limits)
    _exchange(db, conversation_id, "bye", None, limits)
    turns = conv.list_turns(db, conversation_id=conversation_id, owner=OWNER)
    assert [(t.position, t.text, t.status) for t in turns] == [
        (0, "hi", TurnStatus.DONE),
        (1, "hello", TurnStatus.DONE),
        (2, "bye", TurnStatus.DONE),
        (3, None, TurnStatus.PENDING),
    ]


def test_the_database_refuses_two_turns_at_one_position(db: Session, limits: Limits) -> None:
    conversation_id = _conversation_id(db)
    _exchange(db, conversation_id, "hi", None, limits)
    with pytest.raises(IntegrityError), db.begin_nested():
        db.add(
            Turn(
                conversation_id=conversation_id, position=0, role=Role.USER, status=TurnStatus.DONE, text="x"
            )
        )


def test_the_database_refuses_a_repeated_client_request_id_in_a_conversation(
    db: Session, limits: Limits
) -> None:
    conversation_id = _conversation_id(db)
    conv.add_user_turn(
        db, conversation_id=conversation_id, owner=OWNER, text="hi", client_request_id="req-1", limits=limits
    )
    with pytest.raises(IntegrityError), db.begin_nested():
        db.add(
            Turn(
                conversation_id=conversation_id,
                position=9,
                role=Role.USER,
                status=TurnStatus.DONE,
                text="x",
                client_request_id="req-1",
            )
        )


def test_requested_decoding_is_kept_on_the_pending_reply_until_it_is_answered(db):
    from storage import conversations

    conversation = conversations.create_conversation(db, owner="alice")
    turns = conversations.add_user_turn(
        db, conversation_id=conversation.id, owner="alice", text="hi", decoding={"beam_size": 2}
    )
    assert conversations.requested_decoding(db, turn_id=turns.reply_turn_id) == {"beam_size": 2}
    conversations.save_reply(
        db,
        turn_id=turns.reply_turn_id,
        text="hello",
        model_version="m",
        decoding={"beam_size": 2, "max_length": 40},
    )
    assert conversations.requested_decoding(db, turn_id=turns.reply_turn_id) is None


def test_cancelling_stops_only_pending_replies_and_a_late_answer_is_not_stored(
    db: Session, limits: Limits
) -> None:
    conversation_id = _conversation_id(db)
    answered = _exchange(db, conversation_id, "hi", "hello", limits)
    waiting = _exchange(db, conversation_id, "and then?", None, limits)
    assert conv.cancel_pending_replies(db, conversation_id=conversation_id, owner=OWNER) == [
        waiting.reply_turn_id
    ]
    assert conv.cancel_pending_replies(db, conversation_id=conversation_id, owner=OWNER) == []
    assert conv.turn_status(db, turn_id=waiting.reply_turn_id) is TurnStatus.CANCELLED  # a worker skips it
    assert not conv.save_reply(db, turn_id=waiting.reply_turn_id, text="late", model_version="chat@1")
    assert conv.get_turn(db, turn_id=waiting.reply_turn_id, owner=OWNER).text is None
    assert conv.get_turn(db, turn_id=answered.reply_turn_id, owner=OWNER).text == "hello"
    with pytest.raises(NotFound):
        conv.cancel_pending_replies(db, conversation_id=conversation_id, owner=OTHER_OWNER)
