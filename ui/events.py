"""The async functions Gradio calls for each UI event: resolve the owner, call ui.handlers off the event loop,
wait for results by polling the database with asyncio.sleep, and turn errors into gr.Error messages.

Waiting never blocks the event loop (every database or Redis call runs in asyncio.to_thread), so one user's
pending reply does not hold up anyone else. Layout lives in ui/app.py.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import gradio as gr

from flows import exports
from settings import get_settings
from ui import attention, handlers

logger = logging.getLogger(__name__)

POLL_FIRST_S = 0.1
POLL_MAX_S = 1.0
JOB_HEADERS = ["job id", "file", "state", "done", "failed", "pending", "bad lines", "progress", "ETA"]
ERROR_HEADERS = ["where", "reason"]
NBEST_HEADERS = ["rank", "answer", "score"]
WORKER_HEADERS = ["worker", "versions", "device", "queues", "last_seen"]


def user_error(error: BaseException) -> gr.Error:
    """The gr.Error to show for `error`; unexpected ones are logged with their traceback."""
    if isinstance(error, gr.Error):
        return error
    message = handlers.describe_error(error)
    if message.startswith("Something went wrong"):
        logger.exception("unexpected error in a UI event", exc_info=error)
    return gr.Error(message, print_exception=False)


def owner_of(request: gr.Request | None, owner_key: str | None) -> str:
    username = getattr(request, "username", None) if request is not None else None
    return handlers.resolve_owner(username=username, owner_key=owner_key)


async def wait_until_settled(poll: Callable[..., dict[str, Any]], *args: Any, timeout_s: float) -> dict[str, Any]:
    """Call `poll(*args)` (in a thread) until its "status" is not "pending" or `timeout_s` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = POLL_FIRST_S
    while True:
        result = await asyncio.to_thread(poll, *args)
        if result["status"] != "pending" or loop.time() >= deadline:
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX_S)


# --- chat ---------------------------------------------------------------------------------------------------


def for_display(history: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Chatbot messages with <, > and & escaped (even with Markdown off, gr.Chatbot renders sanitized HTML);
    a reply ends with the model version that wrote it, where the stored turn has one."""
    shown = []
    for message in history:
        content = html.escape(message["content"], quote=False)
        if message["role"] == "assistant" and message.get("model_version"):
            content += f'\n<span class="model-version">model: {html.escape(message["model_version"])}</span>'
        shown.append({"role": message["role"], "content": content})
    return shown


def retry_button(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The Retry button's update: shown only while the conversation has a failed reply (what it asks again)."""
    return gr.update(visible=any(message["status"] == "failed" for message in history))


async def load_chat(owner: str, conversation_id: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The conversation to show, and the Retry button's update."""
    history = await asyncio.to_thread(handlers.load_history, owner, conversation_id)
    return for_display(history), retry_button(history)


def conversation_choices(owner: str) -> list[tuple[str, str]]:
    return [(f"{c['title']}  ·  {c['updated_at'][:16].replace('T', ' ')}", c["id"])
            for c in handlers.list_conversations(owner)]


async def start_session(owner_key: str | None, request: gr.Request) -> tuple[Any, ...]:
    """Page load: give a new browser its owner key, and list the owner's conversations."""
    if not getattr(request, "username", None) and (
        not owner_key or len(owner_key) < handlers.MIN_OWNER_KEY_CHARS
    ):
        owner_key = handlers.new_owner_key()
    try:
        choices = await asyncio.to_thread(conversation_choices, owner_of(request, owner_key))
    except Exception as error:
        gr.Warning(handlers.describe_error(error))
        choices = []
    return owner_key, gr.update(choices=choices, value=None), [], ""


async def open_conversation(conversation_id: str | None, owner_key: str, request: gr.Request) -> tuple[Any, ...]:
    if not conversation_id:
        return [], "", retry_button([])
    try:
        history, retry = await load_chat(owner_of(request, owner_key), conversation_id)
    except Exception as error:
        raise user_error(error) from error
    return history, conversation_id, retry


async def new_conversation() -> tuple[Any, ...]:
    return [], "", gr.update(value=None), "", retry_button([])


async def rename_conversation(title: str, conversation_id: str, owner_key: str, request: gr.Request) -> Any:
    try:
        if not conversation_id:
            raise handlers.UserError("Open a conversation first, then rename it.")
        owner = owner_of(request, owner_key)
        await asyncio.to_thread(handlers.rename_conversation, owner, conversation_id, title)
        choices = await asyncio.to_thread(conversation_choices, owner)
    except Exception as error:
        raise user_error(error) from error
    return gr.update(choices=choices, value=conversation_id)


async def delete_conversation(conversation_id: str, owner_key: str, request: gr.Request) -> tuple[Any, ...]:
    try:
        if not conversation_id:
            raise handlers.UserError("Open a conversation first, then delete it.")
        owner = owner_of(request, owner_key)
        await asyncio.to_thread(handlers.delete_conversation, owner, conversation_id)
        choices = await asyncio.to_thread(conversation_choices, owner)
    except Exception as error:
        raise user_error(error) from error
    gr.Info("Conversation deleted.")
    return [], "", gr.update(choices=choices, value=None), retry_button([])


async def _chat_views(owner: str, conversation_id: str, *, relist: bool) -> tuple[Any, ...]:
    """(chat, conversation id, cleared message box, conversation list, Retry button) for reply events."""
    history, retry = await load_chat(owner, conversation_id)
    listed = gr.update()
    if relist:
        listed = gr.update(choices=await asyncio.to_thread(conversation_choices, owner), value=conversation_id)
    return history, conversation_id, "", listed, retry


async def _reply_updates(owner: str, conversation_id: str, turn_id: int) -> AsyncIterator[tuple[Any, ...]]:
    """Show the pending reply at once, then the settled one (or a warning if it failed or is still late)."""
    yield await _chat_views(owner, conversation_id, relist=True)
    outcome = await wait_until_settled(handlers.poll_reply, owner, turn_id, timeout_s=get_settings().request_timeout_s)
    yield await _chat_views(owner, conversation_id, relist=False)
    if outcome["status"] == "failed":
        gr.Warning(f"The reply failed: {outcome['error']}. Press Retry to ask again.")
    elif outcome["status"] == "pending":
        gr.Warning("The reply is taking long; it stays queued and will appear when you reopen the conversation.")


async def send_message(
    text: str, conversation_id: str, owner_key: str, beam_size: float, length_penalty: float,
    max_length: float, request: gr.Request,
) -> AsyncIterator[tuple[Any, ...]]:
    try:
        owner = owner_of(request, owner_key)
        decoding = handlers.check_decoding(beam_size=beam_size, length_penalty=length_penalty, max_length=max_length)
        sent = await asyncio.to_thread(handlers.store_message, owner, conversation_id or None, text or "",
                                       decoding=decoding)
    except Exception as error:
        raise user_error(error) from error
    try:
        try:
            await asyncio.to_thread(handlers.queue_reply, sent.reply_turn_id)
        except Exception:
            # The reply is stored as failed: show it with the Retry button, then say why.
            yield await _chat_views(owner, sent.conversation_id, relist=True)
            raise
        async for update in _reply_updates(owner, sent.conversation_id, sent.reply_turn_id):
            yield update
    except Exception as error:
        raise user_error(error) from error


async def retry_reply(
    conversation_id: str, owner_key: str, beam_size: float, length_penalty: float, max_length: float,
    request: gr.Request,
) -> AsyncIterator[tuple[Any, ...]]:
    try:
        if not conversation_id:
            raise handlers.UserError("Open a conversation first.")
        owner = owner_of(request, owner_key)
        decoding = handlers.check_decoding(beam_size=beam_size, length_penalty=length_penalty, max_length=max_length)
        turn_id = await asyncio.to_thread(handlers.retry_reply, owner, conversation_id, decoding=decoding)
        async for update in _reply_updates(owner, conversation_id, turn_id):
            yield update
    except Exception as error:
        raise user_error(error) from error


# --- reading comprehension ----------------------------------------------------------------------------------


def answer_views(result: dict[str, Any]) -> tuple[Any, ...]:
    """(answer, score, n-best rows, highlighted passage, attention HTML, details) for a settled question."""
    if result["status"] != "done":
        message = result["error"] or "no answer yet"
        return f"({message})", None, [], [], attention.PLACEHOLDER, f"status: {result['status']}"
    n_best = [[rank, h.get("text", ""), round(float(h.get("score", 0.0)), 4)]
              for rank, h in enumerate(result["n_best"], start=1)]
    record = result["attention"]
    details = f"model: {result['model_version']}"
    pointer = record.get("pointer")
    if pointer:  # the span reader: its answer is where its start and end pointers landed
        details += (f" · start pointer {math.exp(pointer['start_log_prob']):.0%} sure,"
                    f" end pointer {math.exp(pointer['end_log_prob']):.0%} sure")
    elif record.get("p_gen"):
        copied = 1.0 - sum(record["p_gen"]) / len(record["p_gen"])
        details += f" · copied from the passage: {copied:.0%}"
    return (result["answer"], round(float(result["score"] or 0.0), 4), n_best,
            attention.highlight_segments(result["passage"], record),
            attention.attention_html(result["passage"], record), details)


async def ask_question(passage: str, question: str, owner_key: str, request: gr.Request) -> AsyncIterator[tuple[Any, ...]]:
    try:
        owner = owner_of(request, owner_key)
        question_id = await asyncio.to_thread(handlers.ask_question, owner, passage or "", question or "")
        yield handlers.PENDING_TEXT, None, [], [], attention.PLACEHOLDER, "status: pending"
        result = await wait_until_settled(handlers.question_result, owner, question_id,
                                          timeout_s=get_settings().request_timeout_s)
    except Exception as error:
        raise user_error(error) from error
    if result["status"] == "failed":
        gr.Warning(f"The question could not be answered: {result['error']}")
    yield answer_views(result)


# --- batch jobs -----------------------------------------------------------------------------------------------


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _progress(job: dict[str, Any]) -> str:
    """The share of items answered or failed; a cancelled job's skipped items do not count as progress."""
    if job["state"] != "cancelled":
        return f"{job['fraction']:.0%}"
    ended = (job["done"] + job["failed"]) / job["total"] if job["total"] else 0.0
    return f"cancelled at {ended:.0%}"


def job_rows(jobs: list[dict[str, Any]]) -> list[list[Any]]:
    return [[j["job_id"], j["filename"], j["state"], j["done"], j["failed"], j["pending"],
             sum(1 for e in j["errors"] if e["where"].startswith("line")), _progress(j), _eta(j["eta_s"])]
            for j in jobs]


async def submit_batch(path: str | None, owner_key: str, request: gr.Request) -> tuple[Any, ...]:
    try:
        if not path:
            raise handlers.UserError("Choose a file first (JSONL, CSV or SQuAD JSON).")
        owner = owner_of(request, owner_key)
        report = await asyncio.to_thread(handlers.submit_batch_file, owner, path)
    except Exception as error:
        raise user_error(error) from error
    message = f"Job {report['job_id']}: {report['items']} item(s) queued ({report['format']}), " \
              f"{len(report['errors'])} bad line(s)."
    if not report["worker_online"]:
        gr.Warning("No worker consumes the batch queue right now; the job waits until one starts.")
    errors = [[f"line {e['line']}", e["reason"]] for e in report["errors"]]
    jobs, job_choices = await refresh_jobs_for(owner)
    return message, errors, jobs, gr.update(choices=job_choices, value=report["job_id"])


async def refresh_jobs_for(owner: str) -> tuple[list[list[Any]], list[str]]:
    jobs = await asyncio.to_thread(handlers.list_jobs, owner)
    return job_rows(jobs), [j["job_id"] for j in jobs]


async def refresh_jobs(selected: str | None, owner_key: str, request: gr.Request) -> tuple[Any, ...]:
    """Timer tick: the job table and the selected job's errors; a failure shows in the table's caption."""
    try:
        owner = owner_of(request, owner_key)
        rows, job_ids = await refresh_jobs_for(owner)
        errors: list[list[str]] = []
        if selected and selected in job_ids:
            status = await asyncio.to_thread(handlers.job_status, owner, selected)
            errors = [[e["where"], e["reason"]] for e in status["errors"]]
        return rows, gr.update(choices=job_ids), errors, _note("")
    except Exception as error:
        return gr.update(), gr.update(), gr.update(), _note(handlers.describe_error(error))


def _note(text: str) -> dict[str, Any]:
    """A message box's update: showing `text`, or hidden while there is nothing to say."""
    return gr.update(value=text, visible=bool(text))


async def cancel_job(job_id: str | None, owner_key: str, request: gr.Request) -> dict[str, Any]:
    try:
        if not job_id:
            raise handlers.UserError("Select a job first.")
        cancelled = await asyncio.to_thread(handlers.cancel_job, owner_of(request, owner_key), job_id)
    except Exception as error:
        raise user_error(error) from error
    return _note(f"Job {job_id} cancelled." if cancelled else f"Job {job_id} had already ended.")


async def export_job(job_id: str | None, owner_key: str, request: gr.Request) -> list[str]:
    try:
        if not job_id:
            raise handlers.UserError("Select a job first.")
        rows = await asyncio.to_thread(handlers.job_results, owner_of(request, owner_key), job_id)
        return await asyncio.to_thread(exports.write_exports, rows, job_id)
    except Exception as error:
        raise user_error(error) from error


# --- system ---------------------------------------------------------------------------------------------------


async def system_status() -> tuple[Any, ...]:
    try:
        status = await asyncio.to_thread(handlers.system_status)
    except Exception as error:
        return [], handlers.describe_error(error)
    rows = [[w[name] for name in WORKER_HEADERS] for w in status["workers"]]
    queues = ", ".join(f"{name}: {depth} waiting" for name, depth in status["queues"].items())
    summary = f"{len(rows)} worker(s) online · {queues}"
    if not rows:
        summary += " · no worker online: start `s2s up` or `s2s worker`"
    return rows, summary
