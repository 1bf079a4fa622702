"""Conversations and their turns: the chat history a reply is decoded from, and the record of each reply.

UI side (owner-scoped: every function takes `owner`, and another owner's rows raise `NotFound`):
create_conversation, get_conversation, list_conversations, rename_conversation, delete_conversation,
add_user_turn, retry_reply, cancel_pending_replies, get_turn, list_turns.
Worker side (by the ids the service itself enqueued): turn_status, history_for, save_reply, fail_reply;
pending_reply_ids.

Every function takes the Session `db` first and keyword arguments after it, and never commits: the caller's
`storage.db.transaction()` does. A redelivered task is harmless: save_reply and fail_reply only change a turn
that is still pending (a guarded UPDATE), and a retried send with the same `client_request_id` returns the
turns it created the first time (unique per conversation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.db import update_rows
from storage.errors import InputTooLong, NotFound
from storage.limits import (
    DEFAULT_LIMITS,
    Limits,
    check_optional_text,
    check_owner,
    check_storable,
    check_text,
    storable,
)
from storage.models import (
    CLIENT_REQUEST_ID_MAX_CHARS,
    MODEL_VERSION_MAX_CHARS,
    TITLE_MAX_CHARS,
    Conversation,
    Role,
    Turn,
    TurnStatus,
    utcnow,
)
from storage.ownership import get_owned


@dataclass(frozen=True)
class NewTurns:
    """The ids add_user_turn made (or found, when the same client_request_id was sent before)."""

    user_turn_id: int
    reply_turn_id: int
    created: bool


def _check_title(title: str) -> str:
    if len(title) > TITLE_MAX_CHARS:
        raise InputTooLong("title", limit=TITLE_MAX_CHARS, length=len(title))
    return check_storable(title, field="title")


def create_conversation(
    db: Session, *, owner: str, title: str = "", language: str | None = None
) -> Conversation:
    conversation = Conversation(owner=check_owner(owner), title=_check_title(title), language=language)
    db.add(conversation)
    db.flush()
    return conversation


def get_conversation(
    db: Session, *, conversation_id: str, owner: str, for_update: bool = False
) -> Conversation:
    """The conversation, if `owner` owns it; `for_update` locks its row until commit (PostgreSQL)."""
    return get_owned(
        db,
        Conversation,
        kind="conversation",
        row_id=conversation_id,
        owner=owner,
        for_update=for_update,
    )


def list_conversations(db: Session, *, owner: str, limit: int = 100) -> list[Conversation]:
    """The owner's conversations, most recently active first."""
    if not storable(owner):
        return []
    query = (
        select(Conversation)
        .where(Conversation.owner == owner)
        .order_by(Conversation.updated_at.desc(), Conversation.id)
        .limit(limit)
    )
    return list(db.scalars(query))


def rename_conversation(db: Session, *, conversation_id: str, owner: str, title: str) -> Conversation:
    conversation = get_conversation(db, conversation_id=conversation_id, owner=owner)
    conversation.title = _check_title(title)
    conversation.updated_at = utcnow()
    db.flush()
    return conversation


def delete_conversation(db: Session, *, conversation_id: str, owner: str) -> None:
    """Delete the conversation and (by ON DELETE CASCADE) all its turns."""
    db.delete(get_conversation(db, conversation_id=conversation_id, owner=owner))
    db.flush()


def add_user_turn(
    db: Session,
    *,
    conversation_id: str,
    owner: str,
    text: str,
    client_request_id: str | None = None,
    decoding: dict[str, Any] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> NewTurns:
    """Store the user's message and a pending assistant turn right after it; enqueue the reply id after commit.

    `decoding` holds the settings the user asked for (beam size, length penalty, ...); it is kept on the pending
    reply, the worker decodes with it, and save_reply replaces it with the settings actually used.

    Sending again with the same `client_request_id` creates nothing and returns the first call's ids.
    Raises EmptyInput / InputTooLong for a bad message (limits.max_message_chars).
    """
    check_text(text, limit=limits.max_message_chars, field="message")
    check_optional_text(client_request_id, limit=CLIENT_REQUEST_ID_MAX_CHARS, field="client_request_id")
    # The row lock serialises senders on PostgreSQL (SQLite's BEGIN IMMEDIATE already does), so positions and
    # the request-id lookup below do not race; the unique constraints stay as the backstop.
    conversation = get_conversation(db, conversation_id=conversation_id, owner=owner, for_update=True)
    if client_request_id is not None:
        earlier = db.scalar(
            select(Turn).where(
                Turn.conversation_id == conversation_id, Turn.client_request_id == client_request_id
            )
        )
        if earlier is not None:
            reply_id = db.scalar(
                select(Turn.id).where(
                    Turn.conversation_id == conversation_id, Turn.position == earlier.position + 1
                )
            )
            if reply_id is None:
                raise NotFound("reply turn after", earlier.id)
            return NewTurns(user_turn_id=earlier.id, reply_turn_id=reply_id, created=False)
    last = db.scalar(select(func.max(Turn.position)).where(Turn.conversation_id == conversation_id))
    position = 0 if last is None else last + 1
    now = utcnow()
    user_turn = Turn(
        conversation_id=conversation_id,
        position=position,
        role=Role.USER,
        status=TurnStatus.DONE,
        text=text,
        client_request_id=client_request_id,
        created_at=now,
        finished_at=now,
    )
    reply_turn = Turn(
        conversation_id=conversation_id,
        position=position + 1,
        role=Role.ASSISTANT,
        status=TurnStatus.PENDING,
        decoding=decoding,
        created_at=now,
    )
    db.add_all([user_turn, reply_turn])
    conversation.updated_at = now
    db.flush()
    return NewTurns(user_turn_id=user_turn.id, reply_turn_id=reply_turn.id, created=True)


def get_turn(db: Session, *, turn_id: int, owner: str) -> Turn:
    if not storable(owner):
        raise NotFound("turn", turn_id)
    query = select(Turn).join(Turn.conversation).where(Turn.id == turn_id, Conversation.owner == owner)
    turn = db.scalar(query)
    if turn is None:
        raise NotFound("turn", turn_id)
    return turn


def list_turns(db: Session, *, conversation_id: str, owner: str) -> list[Turn]:
    """All turns of the conversation, oldest first (pending and failed replies included)."""
    get_conversation(db, conversation_id=conversation_id, owner=owner)
    query = select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.position)
    return list(db.scalars(query))


def retry_reply(db: Session, *, turn_id: int, owner: str, decoding: dict[str, Any] | None = None) -> bool:
    """Set a failed reply back to pending (with new requested `decoding` when given); False if it was not
    failed. Enqueue it again only when True."""
    get_turn(db, turn_id=turn_id, owner=owner)
    values: dict[str, Any] = {"status": TurnStatus.PENDING, "error": None, "finished_at": None}
    if decoding is not None:
        values["decoding"] = decoding
    return _set_reply(db, turn_id=turn_id, from_status=TurnStatus.FAILED, values=values)


def cancel_pending_replies(db: Session, *, conversation_id: str, owner: str) -> list[int]:
    """Mark the conversation's pending replies cancelled (the user stopped them); the ids of those it changed.

    A worker that takes one afterwards skips it (turn_status is no longer pending), and one decoding it now
    cannot store its text (save_reply only writes a pending turn)."""
    pending = [
        turn.id
        for turn in list_turns(db, conversation_id=conversation_id, owner=owner)
        if turn.role is Role.ASSISTANT and turn.status is TurnStatus.PENDING
    ]
    values = {"status": TurnStatus.CANCELLED, "error": "stopped by the user", "finished_at": utcnow()}
    return [
        turn_id
        for turn_id in pending
        if _set_reply(db, turn_id=turn_id, from_status=TurnStatus.PENDING, values=values)
    ]


def requested_decoding(db: Session, *, turn_id: int) -> dict[str, Any] | None:
    """Worker side: the decoding settings a pending reply was asked with (None: the model's defaults)."""
    turn = db.get(Turn, turn_id)
    if turn is None:
        raise NotFound("turn", turn_id)
    return turn.decoding if turn.status is TurnStatus.PENDING else None


def turn_status(db: Session, *, turn_id: int) -> TurnStatus:
    """Worker side: whether a reply is still wanted (a task skips a turn that is no longer pending)."""
    status = db.scalar(select(Turn.status).where(Turn.id == turn_id))
    if status is None:
        raise NotFound("turn", turn_id)
    return status


def pending_reply_ids(db: Session) -> list[int]:
    """Worker side: ids of every reply still pending, oldest first (the sweeper looks for lost messages)."""
    query = select(Turn.id).where(Turn.role == Role.ASSISTANT, Turn.status == TurnStatus.PENDING)
    return list(db.scalars(query.order_by(Turn.id)))


def turn_outcome(db: Session, *, turn_id: int) -> dict[str, Any]:
    """What a waiting caller needs about a reply turn, whatever its state."""
    turn = db.get(Turn, turn_id)
    if turn is None:
        raise NotFound("turn", turn_id)
    return turn_outcome_of(
        turn_id=turn.id,
        status=turn.status,
        text=turn.text,
        model_version=turn.model_version,
        latency_ms=turn.latency_ms,
        error=turn.error,
    )


def turn_outcome_of(
    *,
    turn_id: int,
    status: TurnStatus,
    text: str | None,
    model_version: str | None,
    latency_ms: float | None,
    error: str | None = None,
) -> dict[str, Any]:
    """turn_outcome from the values themselves: a task that has just stored them need not read them back."""
    return {
        "turn_id": turn_id,
        "status": status.value,
        "text": text,
        "model_version": model_version,
        "latency_ms": latency_ms,
        "error": error,
    }


def history_for(db: Session, *, turn_id: int, max_turns: int) -> list[str]:
    """The texts of the last `max_turns` done turns before this one, oldest first: what the reply is decoded from."""
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    turn = db.get(Turn, turn_id)
    if turn is None:
        raise NotFound("turn", turn_id)
    query = (
        select(Turn.text)
        .where(
            Turn.conversation_id == turn.conversation_id,
            Turn.position < turn.position,
            Turn.status == TurnStatus.DONE,
        )
        .order_by(Turn.position.desc())
        .limit(max_turns)
    )
    texts = [text for text in db.scalars(query) if text is not None]
    texts.reverse()
    return texts


def save_reply(
    db: Session,
    *,
    turn_id: int,
    text: str,
    model_version: str,
    decoding: dict[str, Any] | None = None,
    latency_ms: float | None = None,
) -> bool:
    """Worker side: store the reply if the turn is still pending; False (and no write) otherwise."""
    check_text(model_version, limit=MODEL_VERSION_MAX_CHARS, field="model_version")
    return _set_reply(
        db,
        turn_id=turn_id,
        from_status=TurnStatus.PENDING,
        values={
            "status": TurnStatus.DONE,
            "text": text,
            "model_version": model_version,
            "decoding": decoding,
            "latency_ms": latency_ms,
            "error": None,
            "finished_at": utcnow(),
        },
    )


def fail_reply(db: Session, *, turn_id: int, error: str) -> bool:
    """Worker side: mark a pending reply failed with a message the user may see; False if it was not pending."""
    return _set_reply(
        db,
        turn_id=turn_id,
        from_status=TurnStatus.PENDING,
        values={"status": TurnStatus.FAILED, "error": error, "finished_at": utcnow()},
    )


def _set_reply(db: Session, *, turn_id: int, from_status: TurnStatus, values: dict[str, Any]) -> bool:
    matched = update_rows(
        db, Turn, Turn.id == turn_id, Turn.role == Role.ASSISTANT, Turn.status == from_status, **values
    )
    return matched == 1
