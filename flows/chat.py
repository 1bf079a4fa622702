"""Chat: conversations, and each message's reply through the interactive queue.

`send` = `store` (check the text and that a worker is online, store the message and its pending reply) +
`queue` (enqueue the reply, or mark it failed so it can be retried). A reply is read back from the database
(`poll`, `history`), or waited for by reading its row when the worker says it is stored (`wait`, or
`send_and_wait`, which listens before it enqueues); `stop` cancels the replies still pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flows import waiting
from flows.queueing import EngineSource, enqueue_or_fail
from settings import get_settings
from storage import conversations, quotas
from storage.db import read_transaction, transaction
from storage.limits import Limits, check_text
from storage.models import Role, TurnStatus
from workers import client

TITLE_CHARS = 40  # a conversation started by a message is titled with its start
TITLE_MAX_CHARS = 200


class NoFailedReply(LookupError):
    """Retry was asked for a conversation whose replies have none failed."""


@dataclass(frozen=True)
class SentMessage:
    conversation_id: str
    reply_turn_id: int
    task_id: str | None = None  # set once the reply is queued


def list_conversations(engine: EngineSource, owner: str) -> list[dict[str, Any]]:
    """The owner's conversations, most recent first: {"id", "title" ("" if none), "updated_at" (ISO 8601)}."""
    with read_transaction(engine()) as db:
        rows = conversations.list_conversations(db, owner=owner)
        return [{"id": c.id, "title": c.title or "", "updated_at": c.updated_at.isoformat()} for c in rows]


def create_conversation(engine: EngineSource, owner: str, title: str = "") -> str:
    with transaction(engine()) as db:
        return conversations.create_conversation(db, owner=owner, title=title.strip()[:TITLE_MAX_CHARS]).id


def start(engine: EngineSource, owner: str, title: str) -> str:
    """A new conversation to send to, made only when a worker is online to answer it (else NoWorker, and
    nothing is stored)."""
    client.require_worker(client.INTERACTIVE_QUEUE)
    return create_conversation(engine, owner, title)


def rename_conversation(engine: EngineSource, owner: str, conversation_id: str, title: str) -> None:
    check_text(title, limit=TITLE_MAX_CHARS, field="title")
    with transaction(engine()) as db:
        conversations.rename_conversation(
            db, conversation_id=conversation_id, owner=owner, title=title.strip()
        )


def delete_conversation(engine: EngineSource, owner: str, conversation_id: str) -> None:
    with transaction(engine()) as db:
        conversations.delete_conversation(db, conversation_id=conversation_id, owner=owner)


def history(engine: EngineSource, owner: str, conversation_id: str) -> list[dict[str, Any]]:
    """The whole conversation, oldest first: {"role", "status", "text", "error", "model_version"} per turn."""
    with read_transaction(engine()) as db:
        turns = conversations.list_turns(db, conversation_id=conversation_id, owner=owner)
        return [
            {
                "role": turn.role.value,
                "status": turn.status.value,
                "text": turn.text,
                "error": turn.error,
                "model_version": turn.model_version,
            }
            for turn in turns
        ]


def send(
    engine: EngineSource,
    owner: str,
    conversation_id: str | None,
    text: str,
    *,
    decoding: dict[str, Any] | None = None,
) -> SentMessage:
    """Store the message and its pending reply (in a new conversation when none is given), then queue the reply."""
    sent = store(engine, owner, conversation_id, text, decoding=decoding)
    return SentMessage(sent.conversation_id, sent.reply_turn_id, queue(engine, sent.reply_turn_id))


def store(
    engine: EngineSource,
    owner: str,
    conversation_id: str | None,
    text: str,
    *,
    decoding: dict[str, Any] | None = None,
) -> SentMessage:
    """send's first half: check the text and that a worker is online, store the message and its pending reply
    (a new conversation, titled with the message's start, when `conversation_id` is None)."""
    limits = Limits.from_settings(get_settings())
    check_text(
        text, limit=limits.max_message_chars, field="message"
    )  # before the worker check: the text's fault
    client.require_worker(client.INTERACTIVE_QUEUE)
    with transaction(engine()) as db:
        quotas.check_quota(db, owner=owner, quota=quotas.Quota.from_settings(get_settings()))
        if not conversation_id:
            title = " ".join(text.split())[:TITLE_CHARS]
            conversation_id = conversations.create_conversation(db, owner=owner, title=title).id
        turns = conversations.add_user_turn(
            db, conversation_id=conversation_id, owner=owner, text=text, decoding=decoding, limits=limits
        )
    return SentMessage(conversation_id=conversation_id, reply_turn_id=turns.reply_turn_id)


def queue(engine: EngineSource, turn_id: int) -> str:
    """send's second half: enqueue the pending reply (its task id); if that raises, the reply is failed, which
    makes it retryable, and the error goes on."""
    return enqueue_or_fail(
        engine,
        lambda: client.enqueue_reply(turn_id),
        lambda db, error: conversations.fail_reply(db, turn_id=turn_id, error=error),
    )


def poll(engine: EngineSource, owner: str, turn_id: int) -> dict[str, Any]:
    """{"status": "pending"|"done"|"failed", "text", "error"} of a reply turn."""
    with read_transaction(engine()) as db:
        turn = conversations.get_turn(db, turn_id=turn_id, owner=owner)
        return {"status": turn.status.value, "text": turn.text, "error": turn.error}


def send_and_wait(
    engine: EngineSource,
    owner: str,
    conversation_id: str | None,
    text: str,
    *,
    timeout: float,
    decoding: dict[str, Any] | None = None,
) -> tuple[SentMessage, dict[str, Any]]:
    """`send`, then `wait` for the reply, listening for the worker's notice before the reply is enqueued."""
    sent = store(engine, owner, conversation_id, text, decoding=decoding)
    with waiting.watching(waiting.REPLY, sent.reply_turn_id) as watch:
        task_id = queue(engine, sent.reply_turn_id)
        outcome = wait(engine, sent.reply_turn_id, timeout=timeout, watch=watch)
    return SentMessage(sent.conversation_id, sent.reply_turn_id, task_id), outcome


def wait(
    engine: EngineSource, turn_id: int, *, timeout: float, watch: waiting.Watch | None = None
) -> dict[str, Any]:
    """Block until the reply is stored, failed or cancelled, reading its row when the worker says so: {"turn_id",
    "status", "text", "model_version", "latency_ms", "error"}; workers.client.ResultTimeout after `timeout`
    seconds (the reply stays queued). `watch`: one entered (waiting.watching) before the reply was enqueued."""
    return waiting.wait_for(
        engine,
        waiting.REPLY,
        turn_id,
        lambda db: conversations.turn_outcome(db, turn_id=turn_id),
        timeout=timeout,
        watch=watch,
    )


def stop(engine: EngineSource, owner: str, conversation_id: str) -> list[int]:
    """Cancel the conversation's pending replies (the user stopped them); the ids of those it cancelled.

    The database is what stops them: a worker that takes one afterwards finds it no longer pending and skips
    it, and one decoding it now cannot store the text. Nothing is revoked in the queue."""
    with transaction(engine()) as db:
        return conversations.cancel_pending_replies(db, conversation_id=conversation_id, owner=owner)


def last_failed_reply(engine: EngineSource, owner: str, conversation_id: str) -> int | None:
    with transaction(engine()) as db:
        turns = conversations.list_turns(db, conversation_id=conversation_id, owner=owner)
        failed = [t.id for t in turns if t.role is Role.ASSISTANT and t.status is TurnStatus.FAILED]
        return failed[-1] if failed else None


def retry(
    engine: EngineSource, owner: str, conversation_id: str, *, decoding: dict[str, Any] | None = None
) -> int:
    """Queue the conversation's last failed reply again (NoFailedReply if it has none); returns its turn id."""
    turn_id = last_failed_reply(engine, owner, conversation_id)
    if turn_id is None:
        raise NoFailedReply(conversation_id)
    client.require_worker(client.INTERACTIVE_QUEUE)
    with transaction(engine()) as db:
        conversations.retry_reply(db, turn_id=turn_id, owner=owner, decoding=decoding)
    queue(engine, turn_id)
    return turn_id
