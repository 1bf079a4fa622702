"""What every UI event does, as plain functions from plain values to plain values.

The request flows (store, then enqueue or mark failed; read results back from the database, so a reply
survives a restart of the UI or the worker) are `flows.chat`, `flows.questions` and `flows.batch`, shared with
the CLI; handlers bind them to the UI process's engine and add what only the UI has: owners from a login or
a browser key, the decoding sliders, and the words shown for pending and failed replies. They never load a
model, and never wait: polling with a sleep between reads is the caller's job (ui/events.py does it off the
event loop). Errors are the storage, worker and database exceptions themselves; `describe_error` turns each
into a sentence for the user.
"""

from __future__ import annotations

import logging
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

import redis
import sqlalchemy.exc
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import Engine

from flows import batch, chat, questions
from flows.chat import SentMessage
from flows.uploads import BatchFileError
from model.decode_file import decode_settings_for
from settings import get_settings
from storage.db import make_engine
from storage.errors import DuplicateKey, EmptyInput, InputTooLong, NotFound, OverLimit, UnstorableText
from storage.models import Role, TurnStatus
from workers import client
from workers.service_discovery import ServiceNotRunning

logger = logging.getLogger(__name__)

PENDING_TEXT = "⏳ waiting for the model…"
FAILED_TEXT = "⚠️ The reply failed: {error}. Press “Retry” to ask again."
CANCELLED_TEXT = "⏹ Stopped: you cancelled this reply."
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
    if isinstance(error, UserError | BatchFileError | DuplicateKey | UnstorableText | OverLimit):
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
        raise UserError(
            "This page is still starting (no session key yet): try again in a moment, or reload it."
        )
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
    values = {
        "beam_size": int(beam_size),
        "length_penalty": float(length_penalty),
        "max_length": int(max_length),
    }
    for name, value in values.items():
        low, high = DECODING_BOUNDS[name]
        if not low <= value <= high:
            raise UserError(f"{name.replace('_', ' ')} must be between {low} and {high}, got {value}.")
    defaults = decoding_panel_defaults()
    changed = {name: value for name, value in values.items() if value != defaults[name]}
    return changed or None


# --- conversations ----------------------------------------------------------------------------------------
# The flows themselves live in flows/ (one implementation for the UI and the CLI); these bind them to the UI's
# engine and put the UI's words on what they return.


def list_conversations(owner: str) -> list[dict[str, Any]]:
    """The owner's conversations, most recent first: {"id", "title", "updated_at"}."""
    return [{**c, "title": c["title"] or "(untitled)"} for c in chat.list_conversations(engine, owner)]


def create_conversation(owner: str, title: str = "") -> str:
    return chat.create_conversation(engine, owner, title)


def rename_conversation(owner: str, conversation_id: str, title: str) -> None:
    chat.rename_conversation(engine, owner, conversation_id, title)


def delete_conversation(owner: str, conversation_id: str) -> None:
    chat.delete_conversation(engine, owner, conversation_id)


def load_history(owner: str, conversation_id: str) -> list[dict[str, Any]]:
    """The whole conversation from the database, oldest first: {"role", "content", "status", "model_version"}
    per turn (content is what to show: the text, or a pending or failed notice; model_version is None for the
    user's turns and for replies not answered yet)."""
    return [
        {
            "role": turn["role"],
            "content": _content(turn),
            "status": turn["status"],
            "model_version": turn["model_version"],
        }
        for turn in chat.history(engine, owner, conversation_id)
    ]


def _content(turn: dict[str, Any]) -> str:
    if turn["role"] == Role.USER.value or turn["status"] == TurnStatus.DONE.value:
        return turn["text"] or ""
    if turn["status"] == TurnStatus.PENDING.value:
        return PENDING_TEXT
    if turn["status"] == TurnStatus.CANCELLED.value:
        return CANCELLED_TEXT
    return FAILED_TEXT.format(error=turn["error"] or "unknown error")


def send_message(
    owner: str, conversation_id: str | None, text: str, *, decoding: dict[str, Any] | None = None
) -> SentMessage:
    """Store the user's message and a pending reply (a new conversation if none is open), then enqueue it."""
    return chat.send(engine, owner, conversation_id, text, decoding=decoding)


def store_message(
    owner: str, conversation_id: str | None, text: str, *, decoding: dict[str, Any] | None = None
) -> SentMessage:
    """send_message's first half: check there is a worker, store the message and its pending reply."""
    return chat.store(engine, owner, conversation_id, text, decoding=decoding)


def queue_reply(turn_id: int) -> None:
    """send_message's second half: enqueue the pending reply; if that fails, the reply fails (retryable)."""
    chat.queue(engine, turn_id)


def poll_reply(owner: str, turn_id: int) -> dict[str, Any]:
    """{"status": "pending"|"done"|"failed", "text", "error"} of a reply turn."""
    return chat.poll(engine, owner, turn_id)


def retry_reply(owner: str, conversation_id: str, *, decoding: dict[str, Any] | None = None) -> int:
    """Queue the conversation's last failed reply again; returns its turn id."""
    try:
        return chat.retry(engine, owner, conversation_id, decoding=decoding)
    except chat.NoFailedReply as error:
        raise UserError("There is no failed reply to retry in this conversation.") from error


def stop_reply(owner: str, conversation_id: str) -> bool:
    """Cancel the conversation's pending reply (the worker skips it); False if none was pending any more."""
    return bool(chat.stop(engine, owner, conversation_id))


# --- reading comprehension --------------------------------------------------------------------------------


def ask_question(owner: str, passage: str, question: str) -> str:
    """Store (or reuse, by hash) the passage and a pending question, enqueue it; returns the question id."""
    return questions.ask(engine, owner, passage, question).question_id


def stop_question(owner: str, question_id: str) -> bool:
    """Cancel a pending question (the worker skips it); False if it had already been answered or failed."""
    return questions.stop(engine, owner, question_id)


def question_result(owner: str, question_id: str) -> dict[str, Any]:
    """The question's state; once done also answer, score, n_best, attention, passage and model_version."""
    return questions.result(engine, owner, question_id)


# --- batch jobs -------------------------------------------------------------------------------------------


def submit_batch(owner: str, data: bytes, filename: str) -> dict[str, Any]:
    """Parse an uploaded file, store the job with its bad lines, enqueue it.

    Returns {"job_id", "format", "items", "errors" ([{"line", "reason"}]), "worker_online"}.
    """
    return batch.submit(engine, owner, batch.parse_upload(data, filename), filename).to_dict()


def submit_batch_file(owner: str, path: str | Path) -> dict[str, Any]:
    try:
        data = batch.read_upload(path)
    except OSError as error:
        raise UserError(f"The uploaded file cannot be read ({error.strerror or error}).") from error
    return submit_batch(owner, data, Path(path).name)


def job_status(owner: str, job_id: str) -> dict[str, Any]:
    """Progress of one job: counts, fraction, ETA, and its errors (bad input lines and failed items)."""
    return batch.status(engine, owner, job_id)


def list_jobs(owner: str) -> list[dict[str, Any]]:
    return batch.list_jobs(engine, owner)


def cancel_job(owner: str, job_id: str) -> bool:
    """Cancel a running job (answered items keep their answers); False if it had already ended."""
    return batch.cancel(engine, owner, job_id)


def job_results(owner: str, job_id: str) -> list[dict[str, Any]]:
    return batch.results(engine, owner, job_id)


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
