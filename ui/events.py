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
from datetime import UTC, datetime
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
WORKER_HEADERS = [
    "worker",
    "versions",
    "device",
    "queues",
    "last_seen",
]  # keys of handlers.system_status rows


def user_error(error: BaseException) -> gr.Error:
    """The gr.Error to show for `error` (the API endpoints raise it); unexpected ones are logged."""
    if isinstance(error, gr.Error):
        return error
    return gr.Error(say(error), print_exception=False)


def say(error: BaseException) -> str:
    """The sentence to show for `error`; unexpected ones are logged with their traceback."""
    if isinstance(error, gr.Error):
        return str(error.message)
    message = handlers.describe_error(error)
    if message.startswith("Something went wrong"):
        logger.exception("unexpected error in a UI event", exc_info=error)
    return message


def notice(text: str = "") -> dict[str, Any]:
    """The update of a tab's notice line (the one place, next to where the user typed, that a problem is said):
    showing `text`, or hidden while there is nothing to say.

    Events never raise gr.Error for what a user can meet: Gradio would mark every output of the event with an
    "Error" badge, and its toasts stay on screen after a later success."""
    shown = f'<div class="notice" role="alert">{html.escape(text)}</div>' if text else ""
    return gr.update(value=shown, visible=bool(text))


def owner_of(request: gr.Request | None, owner_key: str | None) -> str:
    username = getattr(request, "username", None) if request is not None else None
    return handlers.resolve_owner(username=username, owner_key=owner_key)


async def wait_until_settled(
    poll: Callable[..., dict[str, Any]], *args: Any, timeout_s: float
) -> dict[str, Any]:
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
# Chat events update (some of) the chat, the open conversation's id, the message box, the conversation list,
# the Retry and Stop buttons and the notice line; a value of gr.skip() leaves that one as it is.


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


def stop_button(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The Stop button's update: shown only while a reply is pending (what it stops)."""
    return gr.update(visible=any(message["status"] == "pending" for message in history))


async def load_chat(
    owner: str, conversation_id: str
) -> tuple[list[dict[str, str]], dict[str, Any], dict[str, Any]]:
    """The conversation to show, and the Retry and Stop buttons' updates."""
    history = await asyncio.to_thread(handlers.load_history, owner, conversation_id)
    return for_display(history), retry_button(history), stop_button(history)


def conversation_choices(owner: str) -> list[tuple[str, str]]:
    return [
        (f"{c['title']}  ·  {c['updated_at'][:16].replace('T', ' ')}", c["id"])
        for c in handlers.list_conversations(owner)
    ]


async def start_session(owner_key: str | None, request: gr.Request) -> tuple[Any, ...]:
    """Page load: give a new browser its owner key, list the owner's conversations and open the latest one.

    Outputs: owner key, conversation list, chat, conversation id, Retry, Stop, notice."""
    if not getattr(request, "username", None) and (
        not owner_key or len(owner_key) < handlers.MIN_OWNER_KEY_CHARS
    ):
        owner_key = handlers.new_owner_key()
    try:
        owner = owner_of(request, owner_key)
        choices = await asyncio.to_thread(conversation_choices, owner)
        if not choices:
            return owner_key, gr.update(choices=[], value=None), [], "", *_no_buttons(), notice()
        latest = choices[0][1]
        chat, retry, stop = await load_chat(owner, latest)
    except Exception as error:
        return owner_key, gr.update(choices=[], value=None), [], "", *_no_buttons(), notice(say(error))
    return owner_key, gr.update(choices=choices, value=latest), chat, latest, retry, stop, notice()


def _no_buttons() -> tuple[dict[str, Any], dict[str, Any]]:
    return retry_button([]), stop_button([])


async def open_conversation(
    conversation_id: str | None, owner_key: str, request: gr.Request
) -> tuple[Any, ...]:
    """Outputs: chat, conversation id, Retry, Stop, notice."""
    if not conversation_id:
        return [], "", *_no_buttons(), notice()
    try:
        chat, retry, stop = await load_chat(owner_of(request, owner_key), conversation_id)
    except Exception as error:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), notice(say(error))
    return chat, conversation_id, retry, stop, notice()


async def new_conversation() -> tuple[Any, ...]:
    """New conversation, and the Chatbot's own Clear icon: an empty chat whose next message starts a new
    conversation (the old one stays in the list). Outputs: chat, conversation id, list, title, Retry, Stop,
    notice."""
    return [], "", gr.update(value=None), "", *_no_buttons(), notice()


async def rename_conversation(title: str, conversation_id: str, owner_key: str, request: gr.Request) -> Any:
    """Outputs: conversation list, notice."""
    try:
        if not conversation_id:
            raise handlers.UserError("Open a conversation first, then rename it.")
        owner = owner_of(request, owner_key)
        await asyncio.to_thread(handlers.rename_conversation, owner, conversation_id, title)
        choices = await asyncio.to_thread(conversation_choices, owner)
    except Exception as error:
        return gr.skip(), notice(say(error))
    return gr.update(choices=choices, value=conversation_id), notice()


async def delete_conversation(conversation_id: str, owner_key: str, request: gr.Request) -> tuple[Any, ...]:
    """Outputs: chat, conversation id, list, Retry, Stop, notice."""
    try:
        if not conversation_id:
            raise handlers.UserError("Open a conversation first, then delete it.")
        owner = owner_of(request, owner_key)
        await asyncio.to_thread(handlers.delete_conversation, owner, conversation_id)
        choices = await asyncio.to_thread(conversation_choices, owner)
    except Exception as error:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), notice(say(error))
    return [], "", gr.update(choices=choices, value=None), *_no_buttons(), notice("Conversation deleted.")


REPLY_OUTPUTS = 7  # chat, conversation id, message box, conversation list, Retry, Stop, notice


def _chat_problem(error: BaseException) -> tuple[Any, ...]:
    """A reply event's update that only says what went wrong, next to the message box (which keeps its text)."""
    return (*[gr.skip()] * (REPLY_OUTPUTS - 1), notice(say(error)))


async def _chat_views(owner: str, conversation_id: str, *, relist: bool, said: str = "") -> tuple[Any, ...]:
    """(chat, conversation id, cleared message box, conversation list, Retry, Stop, notice) for reply events."""
    chat, retry, stop = await load_chat(owner, conversation_id)
    listed = gr.update()
    if relist:
        listed = gr.update(
            choices=await asyncio.to_thread(conversation_choices, owner), value=conversation_id
        )
    return chat, conversation_id, "", listed, retry, stop, notice(said)


async def _reply_updates(owner: str, conversation_id: str, turn_id: int) -> AsyncIterator[tuple[Any, ...]]:
    """Show the pending reply at once, then the settled one (saying so if it failed or is still late)."""
    yield await _chat_views(owner, conversation_id, relist=True)
    outcome = await wait_until_settled(
        handlers.poll_reply, owner, turn_id, timeout_s=get_settings().request_timeout_s
    )
    said = ""
    if outcome["status"] == "failed":
        said = f"The reply failed: {outcome['error']}. Press Retry to ask again."
    elif outcome["status"] == "pending":
        said = "The reply is taking long; it stays queued and will appear when you reopen the conversation."
    yield await _chat_views(owner, conversation_id, relist=False, said=said)


async def send_message(
    text: str,
    conversation_id: str,
    owner_key: str,
    beam_size: float,
    length_penalty: float,
    max_length: float,
    request: gr.Request,
) -> AsyncIterator[tuple[Any, ...]]:
    try:
        owner = owner_of(request, owner_key)
        decoding = handlers.check_decoding(
            beam_size=beam_size, length_penalty=length_penalty, max_length=max_length
        )
        sent = await asyncio.to_thread(
            handlers.store_message, owner, conversation_id or None, text or "", decoding=decoding
        )
    except Exception as error:
        yield _chat_problem(error)
        return
    try:
        await asyncio.to_thread(handlers.queue_reply, sent.reply_turn_id)
    except Exception as error:  # the reply is stored as failed: show it with the Retry button, and say why
        yield await _chat_views(owner, sent.conversation_id, relist=True, said=say(error))
        return
    try:
        async for update in _reply_updates(owner, sent.conversation_id, sent.reply_turn_id):
            yield update
    except Exception as error:
        yield _chat_problem(error)


async def retry_reply(
    conversation_id: str,
    owner_key: str,
    beam_size: float,
    length_penalty: float,
    max_length: float,
    request: gr.Request,
) -> AsyncIterator[tuple[Any, ...]]:
    try:
        if not conversation_id:
            raise handlers.UserError("Open a conversation first.")
        owner = owner_of(request, owner_key)
        decoding = handlers.check_decoding(
            beam_size=beam_size, length_penalty=length_penalty, max_length=max_length
        )
        turn_id = await asyncio.to_thread(handlers.retry_reply, owner, conversation_id, decoding=decoding)
        async for update in _reply_updates(owner, conversation_id, turn_id):
            yield update
    except Exception as error:
        yield _chat_problem(error)


async def stop_reply(conversation_id: str, owner_key: str, request: gr.Request) -> tuple[Any, ...]:
    """Stop the open conversation's pending reply: it is cancelled in the database, so the worker skips it.
    Outputs: chat, Retry, Stop, notice (the reply event still waiting on it then shows it stopped)."""
    try:
        if not conversation_id:
            raise handlers.UserError("There is no reply to stop.")
        owner = owner_of(request, owner_key)
        stopped = await asyncio.to_thread(handlers.stop_reply, owner, conversation_id)
        chat, retry, stop = await load_chat(owner, conversation_id)
    except Exception as error:
        return gr.skip(), gr.skip(), gr.skip(), notice(say(error))
    return chat, retry, stop, notice("" if stopped else "The reply had already arrived.")


# --- reading comprehension ----------------------------------------------------------------------------------


def answer_views(result: dict[str, Any]) -> tuple[Any, ...]:
    """(answer, score, n-best rows, highlighted passage, attention HTML, details) for a settled question."""
    if result["status"] != "done":
        message = result["error"] or "no answer yet"
        return f"({message})", None, [], [], attention.PLACEHOLDER, f"status: {result['status']}"
    n_best = [
        [rank, h.get("text", ""), round(float(h.get("score", 0.0)), 4)]
        for rank, h in enumerate(result["n_best"], start=1)
    ]
    record = result["attention"]
    details = f"model: {result['model_version']}"
    pointer = record.get("pointer")
    if pointer:  # the span reader: its answer is where its start and end pointers landed
        details += (
            f" · start pointer {math.exp(pointer['start_log_prob']):.0%} sure,"
            f" end pointer {math.exp(pointer['end_log_prob']):.0%} sure"
        )
    elif record.get("p_gen"):
        copied = 1.0 - sum(record["p_gen"]) / len(record["p_gen"])
        details += f" · copied from the passage: {copied:.0%}"
    return (
        result["answer"],
        round(float(result["score"] or 0.0), 4),
        n_best,
        attention.highlight_segments(result["passage"], record),
        attention.attention_html(result["passage"], record),
        details,
    )


ANSWER_OUTPUTS = 6  # answer, score, n-best, highlighted passage, attention view, details


async def ask_question(
    passage: str, question: str, owner_key: str, request: gr.Request
) -> AsyncIterator[tuple[Any, ...]]:
    """The answer views, then the pending question's id, the Stop button and the notice line."""
    try:
        owner = owner_of(request, owner_key)
        question_id = await asyncio.to_thread(handlers.ask_question, owner, passage or "", question or "")
    except Exception as error:  # said next to the question; the last answer stays as it was
        yield (*[gr.skip()] * ANSWER_OUTPUTS, gr.skip(), gr.skip(), notice(say(error)))
        return
    pending: tuple[Any, ...] = (handlers.PENDING_TEXT, None, [], [], attention.PLACEHOLDER, "status: pending")
    yield (*pending, question_id, gr.update(visible=True), notice())
    try:
        result = await wait_until_settled(
            handlers.question_result, owner, question_id, timeout_s=get_settings().request_timeout_s
        )
    except Exception as error:
        yield (*[gr.skip()] * ANSWER_OUTPUTS, "", gr.update(visible=False), notice(say(error)))
        return
    said = ""
    if result["status"] == "failed":
        said = f"The question could not be answered: {result['error']}"
    elif result["status"] == "pending":
        said = "The answer is taking long; the question stays queued."
    waiting = result["status"] == "pending"
    yield (*answer_views(result), question_id if waiting else "", gr.update(visible=waiting), notice(said))


async def stop_question(question_id: str, owner_key: str, request: gr.Request) -> tuple[Any, ...]:
    """Stop the pending question: it is cancelled in the database, so the worker skips it (the ask event still
    waiting on it then shows it stopped). Outputs: Stop, notice."""
    try:
        if not question_id:
            raise handlers.UserError("There is no question to stop.")
        stopped = await asyncio.to_thread(handlers.stop_question, owner_of(request, owner_key), question_id)
    except Exception as error:
        return gr.skip(), notice(say(error))
    return gr.update(visible=False), notice("" if stopped else "The answer had already arrived.")


# --- batch jobs -----------------------------------------------------------------------------------------------


def _eta(seconds: float | None) -> str:
    """The time left in round figures, so that a rate measured a little differently at each refresh does not
    flicker; "–" until storage knows the rate (storage.batch_jobs._eta_s)."""
    if seconds is None:
        return "–"
    if seconds < 15:
        return "a few seconds"
    if seconds < 90:
        return f"about {round(seconds, -1):.0f} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60):.0f} min"
    return f"about {seconds / 3600:.1f} h"


def _progress(job: dict[str, Any]) -> str:
    """The share of items answered or failed; a cancelled job's skipped items do not count as progress."""
    if job["state"] != "cancelled":
        return f"{job['fraction']:.0%}"
    ended = (job["done"] + job["failed"]) / job["total"] if job["total"] else 0.0
    return f"cancelled at {ended:.0%}"


def job_rows(jobs: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            j["job_id"],
            j["filename"],
            j["state"],
            j["done"],
            j["failed"],
            j["pending"],
            sum(1 for e in j["errors"] if e["where"].startswith("line")),
            _progress(j),
            _eta(j["eta_s"]),
        ]
        for j in jobs
    ]


async def submit_batch(path: str | None, owner_key: str, request: gr.Request) -> tuple[Any, ...]:
    """Outputs: the submission report (where a problem with the file is said), errors, jobs, the job choice."""
    try:
        if not path:
            raise handlers.UserError("Choose a file first (JSONL, CSV or SQuAD JSON).")
        owner = owner_of(request, owner_key)
        report = await asyncio.to_thread(handlers.submit_batch_file, owner, path)
        jobs, job_choices = await refresh_jobs_for(owner)
    except Exception as error:
        return say(error), gr.skip(), gr.skip(), gr.skip()
    message = (
        f"Job {report['job_id']}: {report['items']} item(s) queued ({report['format']}), "
        f"{len(report['errors'])} bad line(s)."
    )
    if not report["worker_online"]:
        message += " No worker consumes the batch queue right now; the job waits until one starts."
    errors = [[f"line {e['line']}", e["reason"]] for e in report["errors"]]
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
        return _note(say(error))
    return _note(f"Job {job_id} cancelled." if cancelled else f"Job {job_id} had already ended.")


async def export_job(job_id: str | None, owner_key: str, request: gr.Request) -> tuple[Any, ...]:
    """Outputs: the download files, the job action line."""
    try:
        if not job_id:
            raise handlers.UserError("Select a job first.")
        rows = await asyncio.to_thread(handlers.job_results, owner_of(request, owner_key), job_id)
        return await asyncio.to_thread(exports.write_exports, rows, job_id), _note("")
    except Exception as error:
        return gr.skip(), _note(say(error))


# --- system ---------------------------------------------------------------------------------------------------


async def system_status() -> tuple[Any, ...]:
    """(the workers table as HTML, the one-line summary) for the System tab."""
    try:
        status = await asyncio.to_thread(handlers.system_status)
    except Exception as error:
        return workers_table([]), handlers.describe_error(error)
    queues = ", ".join(f"{name}: {depth} waiting" for name, depth in status["queues"].items())
    summary = f"{len(status['workers'])} worker(s) online · {queues}"
    if not status["workers"]:
        summary += " · no worker online: start `s2s up` or `s2s worker`"
    return workers_table(status["workers"]), summary


def _clock(timestamp: str) -> str:
    """An ISO 8601 UTC time as 'HH:MM:SS UTC' (a heartbeat is seconds old), or the text itself if it is not one."""
    try:
        return datetime.fromisoformat(timestamp).astimezone(UTC).strftime("%H:%M:%S UTC")
    except ValueError:
        return timestamp


def workers_table(workers: list[dict[str, str]]) -> str:
    """The workers as an HTML table of escaped text whose long cells wrap (one model version a line), so every
    column stays in view at 1280 px and below; gr.Dataframe's wrap=True does not wrap in Gradio 6."""
    if not workers:
        return '<p class="workers-none">No worker online.</p>'
    head = "".join(f"<th>{html.escape(name.replace('_', ' '))}</th>" for name in WORKER_HEADERS)
    rows = []
    for worker in workers:
        cells = [html.escape(worker[name]) for name in WORKER_HEADERS]
        cells[1] = "<br>".join(html.escape(v) for v in worker["versions"].split(", "))
        cells[4] = html.escape(_clock(worker["last_seen"]))
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f'<table class="workers"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
