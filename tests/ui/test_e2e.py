"""End to end: a real Redis, a real worker with the tiny checkpoint, the UI on a free port, driven in headless
Chromium (Debian's /usr/bin/chromium through Playwright) and through gradio_client. Marked slow and e2e.

The tests share one service and one browser context (one owner key in localStorage) and run in file order.
Screenshots go to test-artifacts/screenshots/; the service and browser helpers are in tests/ui/browser.py.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.ui.browser import (
    CHROMIUM,
    CHROMIUM_MISSING,
    SCREENSHOTS,
    Service,
    bot_messages,
    open_page,
    send,
    user_messages,
    wait_text,
)
from ui.handlers import PENDING_TEXT

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PASSAGE = "Bob was born in Oslo. Later Bob moved to Lima for work."
QUESTION = "Where was Bob born?"
ZH_PASSAGE = "小明出生在杭州。后来他搬到上海工作，每个周末都去公园跑步。"
ZH_QUESTION = "小明出生在哪里？"

if not CHROMIUM.exists():
    pytest.skip(CHROMIUM_MISSING, allow_module_level=True)


def test_a_chat_exchange_survives_a_restart_of_the_service(page: Any, service: Service) -> None:
    send(page, "hello there")
    send(page, "你好")
    replies = bot_messages(page)
    assert len(replies) == 2 and all(replies) and not any("failed" in reply for reply in replies)
    versions = page.locator("#chatbot .model-version").all_inner_texts()  # which model wrote each reply
    assert len(versions) == 2 and all(v.startswith("model: tiny-model@") for v in versions)
    assert not page.locator("#retry").is_visible()  # nothing failed, nothing to retry
    page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=True)

    service.restart()
    open_page(page, service)  # same browser, so the same owner key from localStorage
    # the page opens on the last conversation by itself (it used to open on an empty chat)
    page.locator('#chatbot [data-testid="bot"]').nth(1).wait_for()
    assert user_messages(page) == ["hello there", "你好"]
    assert bot_messages(page) == replies
    assert page.locator("#conversation-list input").input_value().startswith("hello there")
    page.screenshot(path=str(SCREENSHOTS / "chat-after-restart.png"), full_page=True)


def test_markup_in_a_message_is_shown_as_text_and_never_runs(page: Any) -> None:
    page.locator("#new-conversation").click()
    page.wait_for_function("() => !document.querySelector('#chatbot [data-testid=\"user\"]')")
    hostile = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'
    send(page, hostile)
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator('#chatbot img[src="x"]').count() == 0
    assert page.locator("#chatbot script").count() == 0
    shown = page.locator('#chatbot [data-testid="user"]').last.inner_text()
    assert "<script>" in shown and "onerror" in shown


def _fail_last_reply(service: Service, error: str) -> None:
    """What a worker stores when a reply fails, written straight to the service's database (a failed reply
    keeps the decoding it was asked with: none here, where the worker had stored what it decoded with)."""
    from sqlalchemy import select, update

    from storage.db import make_engine, transaction
    from storage.models import Role, Turn, TurnStatus

    engine = make_engine(service.env["DATABASE_URL"])
    try:
        with transaction(engine) as db:
            turn_id = db.scalar(
                select(Turn.id).where(Turn.role == Role.ASSISTANT).order_by(Turn.id.desc()).limit(1)
            )
            db.execute(
                update(Turn)
                .where(Turn.id == turn_id)
                .values(status=TurnStatus.FAILED, text=None, model_version=None, decoding=None, error=error)
            )
    finally:
        engine.dispose()


def test_retry_is_offered_only_for_a_failed_reply(page: Any, service: Service) -> None:
    page.locator("#new-conversation").click()
    page.wait_for_function("() => !document.querySelector('#chatbot [data-testid=\"user\"]')")
    send(page, "please answer me")
    assert not page.locator("#retry").is_visible()
    _fail_last_reply(service, "the worker stopped")
    page.locator("#new-conversation").click()
    page.locator("#conversation-list input").click()
    page.get_by_role("option").filter(has_text="please answer me").click()
    page.locator('#chatbot [data-testid="bot"]').get_by_text("the worker stopped").wait_for()
    page.locator("#retry").wait_for(state="visible")
    page.screenshot(path=str(SCREENSHOTS / "chat-failed-reply.png"), full_page=True)
    page.locator("#retry").click()
    page.wait_for_function(
        "() => { const bots = document.querySelectorAll('#chatbot [data-testid=\"bot\"]');"
        " const last = bots[bots.length - 1]; return last && last.querySelector('.model-version'); }"
    )
    assert "failed" not in bot_messages(page)[-1]
    page.locator("#retry").wait_for(state="hidden")


def _ask(page: Any, passage: str, question: str) -> None:
    page.get_by_role("tab", name="Reading comprehension").click()
    page.locator("#passage textarea").fill(passage)
    page.locator("#question textarea").fill(question)
    page.evaluate(
        "() => document.querySelectorAll('#attention-view .attention').forEach(v => v.dataset.old = 1)"
    )
    page.locator("#ask").click()
    page.wait_for_function(  # the old view is gone (a new value re-renders it) and the new one has cells
        "(pending) => document.querySelector('#attention-view .attention:not([data-old]) .t')"
        " && document.querySelector('#answer textarea').value !== pending",
        arg=PENDING_TEXT,
    )


def _attention_cells(page: Any) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "#attention-view .t",
        "cells => cells.map(c => ({text: c.textContent, title: c.title,"
        " classes: c.className, size: getComputedStyle(c).fontSize}))",
    )


def _fits_the_width(page: Any, width: int) -> None:
    """The page never scrolls sideways at `width` px, and the attention view's text stays 14 px or larger."""
    page.set_viewport_size({"width": width, "height": 1000})
    page.wait_for_timeout(300)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    view = page.locator("#attention-view").bounding_box()
    assert view["x"] >= 0 and view["x"] + view["width"] <= width
    assert all(float(cell["size"].removesuffix("px")) >= 14 for cell in _attention_cells(page))


def _screenshots_at_both_widths(page: Any, name: str) -> None:
    for width in (1280, 390):
        _fits_the_width(page, width)
        page.locator("#attention-view").scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 1000})


def test_a_question_shows_its_answer_and_attention(page: Any) -> None:
    _ask(page, PASSAGE, QUESTION)
    assert page.locator("#answer textarea").input_value() == "Oslo"
    highlighted = page.locator("#highlighted-passage")
    highlighted.get_by_text("Oslo", exact=True).first.wait_for()
    assert PASSAGE.replace(" ", "") in highlighted.inner_text().replace(" ", "").replace("\n", "")
    view = page.locator("#attention-view")
    assert "Most attended:" in view.inner_text() and "writing “" in view.inner_text()
    cells = _attention_cells(page)
    answer = [cell for cell in cells if "a" in cell["classes"].split()]
    assert [cell["text"] for cell in answer][:1] == ["Oslo"]  # underlined as the answer
    assert all(re.fullmatch(r".+: weight \d\.\d{3} while writing “.+”", cell["title"]) for cell in cells)
    # every passage word is a cell, in order, under each output row
    assert PASSAGE.replace(" ", "") in "".join(cell["text"] for cell in cells)
    _screenshots_at_both_widths(page, "reading-comprehension")


def test_chinese_and_a_long_passage_stay_readable(page: Any) -> None:
    _ask(page, ZH_PASSAGE, ZH_QUESTION)
    shown = "".join(cell["text"] for cell in _attention_cells(page))
    assert "小明出生在杭州" in shown and "小明出生在哪里" in shown
    assert not re.search(r"#\d", page.locator("#attention-view").inner_text())
    _screenshots_at_both_widths(page, "reading-comprehension-zh")

    long_passage = " ".join(f"Sentence {i} is about the town of Place{i}." for i in range(75)) + " " + PASSAGE
    assert len(long_passage) > 3000
    _ask(page, long_passage, QUESTION)
    text = page.locator("#attention-view").inner_text()
    # the model reads a window of a long passage: the view says which part, and draws only that part
    assert re.search(
        r"read only part of this passage .*: characters \d+–\d+ of " + str(len(long_passage)), text
    )
    assert "Sentence 0 " not in text and "Bob was born" in text
    rows = page.locator("#attention-view .row")
    for index in range(rows.count()):
        assert rows.nth(index).locator(".t").count() <= 2 * 60 + 1 + 40  # not 3,000 characters' worth
    _screenshots_at_both_widths(page, "reading-comprehension-long")


def test_a_batch_upload_with_a_bad_line_runs_the_rest(page: Any, tmp_path: Path) -> None:
    upload = tmp_path / "questions.jsonl"
    upload.write_text(
        "\n".join(
            [
                json.dumps({"id": "q1", "question": QUESTION, "passage": PASSAGE}),
                "{this line is broken",
                json.dumps(
                    {"id": "q2", "question": "小明出生在哪里？", "passage": "小明出生在杭州。"},
                    ensure_ascii=False,
                ),
            ]
        ),
        encoding="utf-8",
    )
    page.get_by_role("tab", name="Batch jobs").click()
    page.locator("#batch-file input[type=file]").wait_for(state="attached")
    assert not page.locator("#refresh-problem").is_visible()  # empty message boxes stay out of the way
    assert not page.locator("#job-action").is_visible()
    page.locator("#batch-file input[type=file]").set_input_files(str(upload))
    page.locator("#batch-submit").click()
    page.wait_for_function(
        "() => document.querySelector('#batch-report textarea').value.includes('1 bad line')"
    )
    assert "2 item(s) queued" in page.locator("#batch-report textarea").input_value()
    wait_text(page, "#job-errors", "line 2")
    wait_text(page, "#jobs", "100%")  # the job finished ("done" is also a column header)
    page.locator("#job-export").click()
    predictions = page.locator('#job-downloads a[download$="-predictions.json"]')
    predictions.wait_for()
    assert page.locator("#job-downloads a[download]").count() == 3
    with urllib.request.urlopen(predictions.get_attribute("href"), timeout=10) as response:
        assert json.loads(response.read())["q1"] == "Oslo"
    page.locator("#job-cancel").click()
    page.wait_for_function(
        "() => document.querySelector('#job-action input')?.value.includes('had already ended')"
    )
    assert page.locator("#job-action").is_visible() and not page.locator("#refresh-problem").is_visible()
    page.screenshot(path=str(SCREENSHOTS / "batch-jobs.png"), full_page=True)


def test_the_system_tab_shows_the_worker(page: Any) -> None:
    page.get_by_role("tab", name="System").click()
    wait_text(page, "#workers", "cpu")
    assert "1 worker(s) online" in page.locator("#system-summary textarea").input_value()
    page.screenshot(path=str(SCREENSHOTS / "system.png"), full_page=True)


def test_the_named_endpoints_work_from_gradio_client(service: Service) -> None:
    from gradio_client import Client

    client = Client(service.url, verbose=False)
    chat = client.predict("hello there", "", "", api_name="/chat")
    assert chat["status"] == "done" and chat["reply"] and len(chat["owner_key"]) == 32
    again = client.predict("and again", chat["conversation_id"], chat["owner_key"], api_name="/chat")
    assert again["conversation_id"] == chat["conversation_id"]

    answer = client.predict(PASSAGE, QUESTION, chat["owner_key"], api_name="/answer")
    assert (answer["answer"], answer["span"]) == ("Oslo", [16, 20])
    assert answer["n_best"][0]["attention"]

    lines = json.dumps({"id": "a", "question": QUESTION, "passage": PASSAGE}) + "\nnot json\n"
    job = client.predict(lines, "q.jsonl", chat["owner_key"], api_name="/batch_submit")
    assert job["items"] == 1 and job["errors"][0]["line"] == 2
    deadline = time.monotonic() + 30
    status = client.predict(job["job_id"], chat["owner_key"], api_name="/batch_status")
    while status["state"] not in {"done", "failed"} and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.predict(job["job_id"], chat["owner_key"], api_name="/batch_status")
    assert status["state"] == "done" and status["results"][0]["answer"] == "Oslo"

    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="does not exist"):  # another owner key sees nothing
        client.predict(job["job_id"], "c" * 32, api_name="/batch_status")


def test_thirty_two_chats_at_once_are_all_answered(service: Service) -> None:
    from gradio_client import Client

    client = Client(service.url, verbose=False)
    started = time.monotonic()
    jobs = [client.submit(f"hello number {i}", "", "", api_name="/chat") for i in range(32)]
    outcomes = [job.result(timeout=60) for job in jobs]
    elapsed = time.monotonic() - started
    assert all(outcome["status"] == "done" for outcome in outcomes)
    assert len({outcome["owner_key"] for outcome in outcomes}) == 32
    assert elapsed < 30, f"32 concurrent chats took {elapsed:.1f} s"
