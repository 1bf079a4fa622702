"""Named API endpoints for gradio_client: /chat, /answer, /batch_submit, /batch_status.

Each takes plain strings and returns a JSON dict. Without a login, an API caller is identified by the
`owner_key` it passes (a new one is made and returned when it is empty; pass it back on later calls). With a
login (S2S_UI_USER), the logged-in user is the owner. Errors come back as gr.Error messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr
from gradio.events import api as register_api

from flows.batch import ENDED
from settings import get_settings
from ui import events, handlers


def _owner(request: gr.Request, owner_key: str) -> tuple[str, str]:
    key = owner_key or handlers.new_owner_key()
    return events.owner_of(request, key), key


async def chat(message: str, conversation_id: str, owner_key: str, request: gr.Request) -> dict[str, Any]:
    """Send `message` (to a new conversation when conversation_id is empty) and wait for the reply."""
    try:
        owner, key = _owner(request, owner_key)
        sent = await asyncio.to_thread(handlers.send_message, owner, conversation_id or None, message)
        outcome = await events.wait_until_settled(
            handlers.poll_reply, owner, sent.reply_turn_id, timeout_s=get_settings().request_timeout_s
        )
    except Exception as error:
        raise events.user_error(error) from error
    return {
        "owner_key": key,
        "conversation_id": sent.conversation_id,
        "turn_id": sent.reply_turn_id,
        "status": outcome["status"],
        "reply": outcome["text"],
        "error": outcome["error"],
    }


async def answer(passage: str, question: str, owner_key: str, request: gr.Request) -> dict[str, Any]:
    """Answer `question` about `passage`: answer, score, span, n_best (with attention) and model version."""
    try:
        owner, key = _owner(request, owner_key)
        question_id = await asyncio.to_thread(handlers.ask_question, owner, passage, question)
        result = await events.wait_until_settled(
            handlers.question_result, owner, question_id, timeout_s=get_settings().request_timeout_s
        )
    except Exception as error:
        raise events.user_error(error) from error
    result.pop("passage", None)
    return {"owner_key": key, "span": result["attention"].get("span"), **result}


async def batch_submit(content: str, filename: str, owner_key: str, request: gr.Request) -> dict[str, Any]:
    """Submit a batch file's text (JSONL, CSV or SQuAD JSON; `filename` picks the format)."""
    try:
        owner, key = _owner(request, owner_key)
        report = await asyncio.to_thread(handlers.submit_batch, owner, content.encode("utf-8"), filename)
    except Exception as error:
        raise events.user_error(error) from error
    return {"owner_key": key, **report}


async def batch_status(job_id: str, owner_key: str, request: gr.Request) -> dict[str, Any]:
    """A job's state, counts, fraction, ETA and errors; once it has ended, also its results."""
    try:
        owner, _key = _owner(request, owner_key)
        status = await asyncio.to_thread(handlers.job_status, owner, job_id)
        if status["state"] in ENDED:
            status["results"] = await asyncio.to_thread(handlers.job_results, owner, job_id)
    except Exception as error:
        raise events.user_error(error) from error
    return status


def register() -> None:
    """Add the endpoints to the gr.Blocks being built (call inside its `with` block)."""
    register_api(chat, api_name="chat")
    register_api(answer, api_name="answer")
    register_api(batch_submit, api_name="batch_submit")
    register_api(batch_status, api_name="batch_status")
