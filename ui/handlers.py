"""What every UI event does, as plain functions from plain values to plain values.

Handlers store rows through `storage` (committing in their own `transaction()`), enqueue through
`workers.client` only after the commit, and read results back from the database, so a reply survives a
restart of the UI or the worker. They never import `model` or torch, and never wait: polling with a sleep
between reads is the caller's job (ui/app.py does it off the event loop). Errors are the storage, worker and
database exceptions themselves; `describe_error` turns each into a sentence for the user.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import redis
import sqlalchemy.exc
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import Engine

from model.decode_file import decode_settings_for
from settings import get_settings
from storage import conversations, qa
from storage.db import make_engine, transaction
from storage.errors import DuplicateKey, EmptyInput, InputTooLong, NotFound
from storage.limits import check_text
from storage.models import Role, TurnStatus
from workers import client
from workers.batch_files import BatchFileError, BatchLimits, parse_batch_file
from workers.service_discovery import ServiceNotRunning

logger = logging.getLogger(__name__)

PENDING_TEXT = "⏳ waiting for the model…"
FAILED_TEXT = "⚠️ The reply failed: {error}. Press “Retry” to ask again."
TITLE_CHARS = 40
MIN_OWNER_KEY_CHARS = 16
DECODING_BOUNDS = {"beam_size": (1, 16), "length_penalty": (0.0, 3.0), "max_length": (1, 256)}


class UserError(ValueError):
    """A problem the user can fix, already worded for them."""


@lru_cache(maxsize=4)
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def engine() -> Engine:
    """The UI process's engine for the configured database (created on first use, never at import)."""
    return _engine_for(get_settings().resolved_database_url)


# --- errors and owners ------------------------------------------------------------------------------------


def describe_error(error: BaseException) -> str:
    """One readable sentence for an error a user can cause or meet."""
    if isinstance(error, UserError | BatchFileError | DuplicateKey):
        return str(error)
    if isinstance(error, EmptyInput):
        return f"The {error.field} is empty: please type something."
    if isinstance(error, InputTooLong):
        return f"The {error.field} is too long: {error.length} characters, the limit is {error.limit}."
    if isinstance(error, NotFound):
        return f"That {error.kind} does not exist (it may have been deleted)."
    if isinstance(error, client.NoWorker):
        return "No worker is online to answer right now. Start one (`s2s up` or `s2s worker`) and try again."
    if isinstance(error, ServiceNotRunning | redis.RedisError | KombuOperationalError | ConnectionError):
        return "The queue (Redis) is unreachable, so nothing can be answered right now. Please try again shortly."
    if isinstance(error, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return "The database is unreachable right now. Please try again shortly."
    return f"Something went wrong ({type(error).__name__}). Please try again."


def new_owner_key() -> str:
    """A random key that makes an anonymous browser (or API caller) the owner of its rows."""
    return secrets.token_hex(16)


def resolve_owner(*, username: str | None, owner_key: str | None) -> str:
    """The storage owner: the login name when logged in, else the browser's (or API caller's) random key."""
    if username:
        return f"user:{username}"
    if not owner_key or len(owner_key) < MIN_OWNER_KEY_CHARS:
        raise UserError("This page is still starting (no session key yet): try again in a moment, or reload it.")
    return f"anon:{owner_key}"


def decoding_panel_defaults() -> dict[str, Any]:
    """Where the decoding sliders start. Left there, they ask for nothing: the model's own defaults apply.

    They start at what a reply is decoded with: the operator's S2S_BEAM_SIZE / S2S_MAX_OUTPUT_TOKENS where set,
    else the English chat model's decode.json (read without loading the model), else common values.
    """
    settings = get_settings()
    try:
        shipped = decode_settings_for(Path(settings.checkpoint_dir), "chat/en")
    except (OSError, ValueError) as error:  # the workers report a broken file; the panel still opens
        logger.warning("chat decoding defaults unreadable: %s", error)
        shipped = {}
    return {
        "beam_size": settings.beam_size or shipped.get("beam_size", 5),
        "length_penalty": float(shipped.get("length_penalty", 1.0)),
        "max_length": settings.max_output_tokens or shipped.get("max_length", 48),
    }


def check_decoding(*, beam_size: float, length_penalty: float, max_length: float) -> dict[str, Any] | None:
    """The decoding settings the user changed on the sliders, validated, as plain JSON (None: none changed)."""
    values = {"beam_size": int(beam_size), "length_penalty": float(length_penalty), "max_length": int(max_length)}
    for name, value in values.items():
        low, high = DECODING_BOUNDS[name]
        if not low <= value <= high:
            raise UserError(f"{name.replace('_', ' ')} must be between {low} and {high}, got {value}.")
    defaults = decoding_panel_defaults()
    changed = {name: value for name, value in values.items() if value != defaults[name]}
    return changed or None


# --- conversations ----------------------------------------------------------------------------------------


def list_conversations(owner: str) -> list[dict[str, Any]]:
    """The owner's conversations, most recent first: {"id", "title", "updated_at"}."""
    with transaction(engine()) as db:
        rows = conversations.list_conversations(db, owner=owner)
        return [{"id": c.id, "title": c.title or "(untitled)", "updated_at": c.updated_at.isoformat()} for c in rows]


def create_conversation(owner: str, title: str = "") -> str:
    with transaction(engine()) as db:
        return conversations.create_conversation(db, owner=owner, title=title.strip()[:200]).id


def rename_conversation(owner: str, conversation_id: str, title: str) -> None:
    check_text(title, limit=200, field="title")
    with transaction(engine()) as db:
        conversations.rename_conversation(db, conversation_id=conversation_id, owner=owner, title=title.strip())


def delete_conversation(owner: str, conversation_id: str) -> None:
    with transaction(engine()) as db:
        conversations.delete_conversation(db, conversation_id=conversation_id, owner=owner)


def load_history(owner: str, conversation_id: str) -> list[dict[str, Any]]:
    """The whole conversation from the database, oldest first: {"role", "content", "status", "model_version"}
    per turn (content is what to show: the text, or a pending or failed notice; model_version is None for the
    user's turns and for replies not answered yet)."""
    with transaction(engine()) as db:
        turns = conversations.list_turns(db, conversation_id=conversation_id, owner=owner)
        return [{"role": turn.role.value, "content": _content(turn.role, turn.status, turn.text, turn.error),
                 "status": turn.status.value, "model_version": turn.model_version} for turn in turns]


def _content(role: Role, status: TurnStatus, text: str | None, error: str | None) -> str:
    if role is Role.USER or status is TurnStatus.DONE:
        return text or ""
    if status is TurnStatus.PENDING:
        return PENDING_TEXT
    return FAILED_TEXT.format(error=error or "unknown error")


@dataclass(frozen=True)
class SentMessage:
    conversation_id: str
    reply_turn_id: int


def send_message(
    owner: str, conversation_id: str | None, text: str, *, decoding: dict[str, Any] | None = None
) -> SentMessage:
    """Store the user's message and a pending reply (a new conversation if none is open), then enqueue it."""
    sent = store_message(owner, conversation_id, text, decoding=decoding)
    queue_reply(sent.reply_turn_id)
    return sent


def store_message(
    owner: str, conversation_id: str | None, text: str, *, decoding: dict[str, Any] | None = None
) -> SentMessage:
    """send_message's first half: check there is a worker, store the message and its pending reply."""
    check_text(text, limit=get_settings().max_message_chars, field="message")
    client.require_worker(client.INTERACTIVE_QUEUE)
    with transaction(engine()) as db:
        if not conversation_id:
            title = " ".join(text.split())[:TITLE_CHARS]
            conversation_id = conversations.create_conversation(db, owner=owner, title=title).id
        turns = conversations.add_user_turn(db, conversation_id=conversation_id, owner=owner, text=text,
                                            decoding=decoding)
    return SentMessage(conversation_id=conversation_id, reply_turn_id=turns.reply_turn_id)


def queue_reply(turn_id: int) -> None:
    """send_message's second half: enqueue the pending reply; if that fails, the reply fails (retryable)."""
    try:
        client.enqueue_reply(turn_id)
    except Exception as error:
        # Leave the turn retryable instead of pending forever, then tell the user.
        with transaction(engine()) as db:
            conversations.fail_reply(db, turn_id=turn_id, error="it could not be queued")
        raise error


def poll_reply(owner: str, turn_id: int) -> dict[str, Any]:
    """{"status": "pending"|"done"|"failed", "text", "error"} of a reply turn."""
    with transaction(engine()) as db:
        turn = conversations.get_turn(db, turn_id=turn_id, owner=owner)
        return {"status": turn.status.value, "text": turn.text, "error": turn.error}


def last_failed_reply(owner: str, conversation_id: str) -> int | None:
    with transaction(engine()) as db:
        turns = conversations.list_turns(db, conversation_id=conversation_id, owner=owner)
        failed = [t.id for t in turns if t.role is Role.ASSISTANT and t.status is TurnStatus.FAILED]
        return failed[-1] if failed else None


def retry_reply(owner: str, conversation_id: str, *, decoding: dict[str, Any] | None = None) -> int:
    """Queue the conversation's last failed reply again; returns its turn id."""
    turn_id = last_failed_reply(owner, conversation_id)
    if turn_id is None:
        raise UserError("There is no failed reply to retry in this conversation.")
    client.require_worker(client.INTERACTIVE_QUEUE)
    with transaction(engine()) as db:
        conversations.retry_reply(db, turn_id=turn_id, owner=owner, decoding=decoding)
    queue_reply(turn_id)
    return turn_id


# --- reading comprehension --------------------------------------------------------------------------------


def ask_question(owner: str, passage: str, question: str) -> str:
    """Store (or reuse, by hash) the passage and a pending question, enqueue it; returns the question id."""
    settings = get_settings()
    check_text(passage, limit=settings.max_passage_chars, field="passage")
    check_text(question, limit=settings.max_question_chars, field="question")
    client.require_worker(client.INTERACTIVE_QUEUE)
    with transaction(engine()) as db:
        passage_id = qa.upsert_passage(db, text=passage)
        question_id = qa.create_question(db, owner=owner, passage_id=passage_id, question=question).id
    try:
        client.enqueue_question(question_id)
    except Exception:
        with transaction(engine()) as db:
            qa.fail_question(db, question_id=question_id, error="it could not be queued")
        raise
    return question_id


def question_result(owner: str, question_id: str) -> dict[str, Any]:
    """The question's state; once done also answer, score, n_best, attention, passage and model_version."""
    with transaction(engine()) as db:
        row = qa.get_question(db, question_id=question_id, owner=owner)
        return {
            "question_id": row.id,
            "status": row.status.value,
            "question": row.question,
            "passage": row.passage.text,
            "answer": row.answer,
            "score": row.score,
            "n_best": list(row.n_best or []),
            "attention": dict(row.attention or {}),
            "model_version": row.model_version,
            "error": row.error,
        }


# --- batch jobs -------------------------------------------------------------------------------------------


def submit_batch(owner: str, data: bytes, filename: str) -> dict[str, Any]:
    """Parse an uploaded file, store the job with its bad lines, enqueue it.

    Returns {"job_id", "format", "items", "errors" ([{"line", "reason"}]), "worker_online"}.
    """
    settings = get_settings()
    limits = BatchLimits.from_settings(settings)
    parsed = parse_batch_file(data, filename, limits=limits)
    with transaction(engine()) as db:
        job_id = qa.create_job(db, owner=owner, filename=filename[:255], items=parsed.items, errors=parsed.errors)
    if parsed.items:
        client.enqueue_job(job_id)
    online = any(client.BATCH_QUEUE in worker.get("queues", []) for worker in client.list_workers())
    return {
        "job_id": job_id,
        "format": parsed.format,
        "items": len(parsed.items),
        "errors": parsed.errors,
        "worker_online": online,
    }


def submit_batch_file(owner: str, path: str | Path) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UserError(f"The uploaded file cannot be read ({error.strerror or error}).") from error
    return submit_batch(owner, data, Path(path).name)


def job_status(owner: str, job_id: str) -> dict[str, Any]:
    """Progress of one job: counts, fraction, ETA, and its errors (bad input lines and failed items)."""
    with transaction(engine()) as db:
        progress = qa.job_progress(db, job_id=job_id, owner=owner)
        job = qa.get_job(db, job_id=job_id, owner=owner)
        rows = qa.export_results(db, job_id=job_id, owner=owner)
        errors = [{"where": f"line {e['line']}", "reason": e["reason"]} for e in job.parse_errors]
        errors += [{"where": f"item {r['id']}", "reason": r["error"]} for r in rows if r["status"] == "failed"]
        return {**progress.to_dict(), "filename": job.filename, "error": job.error, "errors": errors}


def list_jobs(owner: str) -> list[dict[str, Any]]:
    with transaction(engine()) as db:
        job_ids = [job.id for job in qa.list_jobs(db, owner=owner)]
    return [job_status(owner, job_id) for job_id in job_ids]


def cancel_job(owner: str, job_id: str) -> bool:
    """Cancel a running job (answered items keep their answers); False if it had already ended."""
    with transaction(engine()) as db:
        cancelled = qa.cancel_job(db, job_id=job_id, owner=owner)
    if cancelled:
        client.cancel_job(job_id)
    return cancelled


def job_results(owner: str, job_id: str) -> list[dict[str, Any]]:
    with transaction(engine()) as db:
        return qa.export_results(db, job_id=job_id, owner=owner)


# --- system -----------------------------------------------------------------------------------------------


def system_status() -> dict[str, Any]:
    """{"workers": [...], "queues": {name: depth}}; raises when Redis is unreachable."""
    workers = [
        {
            "worker": str(w.get("hostname", "?")),
            "versions": ", ".join(f"{k}={v}" for k, v in sorted((w.get("versions") or {}).items())),
            "device": str(w.get("device", "?")),
            "queues": ", ".join(w.get("queues", [])),
            "last_seen": str(w.get("last_seen", "")),
        }
        for w in client.list_workers()
    ]
    return {"workers": workers, "queues": client.queue_depths()}
