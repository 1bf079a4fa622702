"""End to end, in headless Chromium against the real service (tests/ui/browser.py): the UI's controls say only
what is true (issue #17). The Chatbot's Clear icon starts a new conversation; a problem is said once, next to
where the user typed, with no "Error" badges or toasts left behind; a pending reply or question can be stopped
(cancelled in the database, skipped by the real worker); job ETAs wait for a known rate; the conversation list's
text stops before its caret and the System table keeps its columns in view; a reload opens the last conversation;
the batch upload box says what a line needs. Then screenshots of every tab, in English and Chinese, at 1280 and
390 px. Marked slow and e2e; the tests share one service and run in file order.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select, update

from storage import batch_jobs
from storage.db import make_engine, transaction
from storage.models import (
    Conversation,
    JobStatus,
    QAJob,
    QAJobItem,
    Question,
    QuestionStatus,
    Turn,
    TurnStatus,
    utcnow,
)
from tests.ui.browser import (
    CHROMIUM,
    CHROMIUM_MISSING,
    SCREENSHOTS,
    Service,
    new_page,
    open_page,
    send,
    user_messages,
    wait_text,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

if not CHROMIUM.exists():
    pytest.skip(CHROMIUM_MISSING, allow_module_level=True)

PASSAGE = "Bob was born in Oslo. Later Bob moved to Lima for work."
QUESTION = "Where was Bob born?"
ZH_PASSAGE = "小明出生在杭州。后来他搬到上海工作，每个周末都去公园跑步。"
ZH_QUESTION = "小明出生在哪里？"
LONG_TITLE = "a first conversation whose title is far longer than the list is wide"
ERROR_BADGES = (
    "() => [...document.querySelectorAll('.error, [data-testid=\"status-tracker\"]')]"
    ".filter(e => e.offsetParent !== null && e.innerText.trim() === 'Error').length"
)
VISIBLE_TOASTS = (
    "() => [...document.querySelectorAll('.toast-body')].filter(e => e.offsetParent !== null).length"
)


@pytest.fixture(scope="module")
def engine(service: Service) -> Iterator[Any]:
    opened = make_engine(service.env["DATABASE_URL"])
    yield opened
    opened.dispose()


@contextmanager
def worker_paused(service: Service) -> Iterator[None]:
    """SIGSTOP the worker's process group, so a request stays pending in the queue; SIGCONT on the way out.
    Keep it short: the worker's heartbeat expires after 15 s, and with it the UI's "a worker is online"."""
    assert service.worker is not None
    os.killpg(service.worker.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(service.worker.pid, signal.SIGCONT)


def _worker_log_shows(service: Service, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (service.tmp / "worker.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, f"the worker never logged {text!r}"
        time.sleep(0.2)


def _owner(page: Any, engine: Any) -> str:
    """The owner key this module's browser got (it is only in the browser's encrypted storage), read from the
    conversation a message makes."""
    page.get_by_role("tab", name="Chat").click()
    page.locator("#new-conversation").click()
    page.wait_for_function("() => !document.querySelector('#chatbot [data-testid=\"user\"]')")
    send(page, "who am I?")
    with transaction(engine) as db:
        owner = db.scalar(select(Conversation.owner).where(Conversation.title == "who am I?"))
    assert owner
    return str(owner)


def test_the_chatbots_clear_icon_starts_a_new_conversation(page: Any) -> None:
    send(page, LONG_TITLE)
    page.locator('#chatbot button[aria-label="Clear"]').click()
    page.wait_for_function("() => !document.querySelector('#chatbot [data-testid=\"user\"]')")
    send(page, "a second conversation")
    # before, the emptied chat went on with the old conversation and the reply brought its history back
    assert user_messages(page) == ["a second conversation"]
    page.locator("#conversation-list input").click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    assert len(options) == 2 and "a second conversation" in options[0]  # the new one, selected


def test_an_empty_message_is_said_once_next_to_the_box_and_nothing_stays_after_a_success(page: Any) -> None:
    page.locator("#chat-input textarea").fill("")
    page.locator("#send").click()
    notice = page.locator("#chat-notice")
    notice.get_by_text("The message is empty").wait_for()
    page.wait_for_timeout(500)
    assert page.evaluate(ERROR_BADGES) == 0  # not on the chat, the list and the buttons
    assert page.evaluate(VISIBLE_TOASTS) == 0
    box = page.locator("#chat-input textarea").bounding_box()
    said = notice.bounding_box()
    assert 0 <= said["y"] - (box["y"] + box["height"]) < 80  # right under the message box
    page.screenshot(path=str(SCREENSHOTS / "chat-empty-message.png"), full_page=True)
    send(page, "now a real message")
    notice.wait_for(state="hidden")
    assert page.evaluate(VISIBLE_TOASTS) == 0 and page.evaluate(ERROR_BADGES) == 0

    page.get_by_role("tab", name="Reading comprehension").click()
    page.locator("#passage textarea").fill(PASSAGE)
    page.locator("#question textarea").fill("")
    page.locator("#ask").click()
    page.locator("#rc-notice").get_by_text("The question is empty").wait_for()
    page.wait_for_timeout(500)
    assert page.evaluate(ERROR_BADGES) == 0 and page.evaluate(VISIBLE_TOASTS) == 0
    page.locator("#question textarea").fill(QUESTION)
    page.locator("#ask").click()
    page.wait_for_function("() => document.querySelector('#answer textarea').value === 'Oslo'")
    page.locator("#rc-notice").wait_for(state="hidden")
    page.get_by_role("tab", name="Chat").click()


def test_a_pending_reply_can_be_stopped_and_the_worker_skips_it(
    page: Any, service: Service, engine: Any
) -> None:
    with worker_paused(service):
        page.locator("#chat-input textarea").fill("please stop this one")
        page.locator("#chat-input textarea").press("Enter")
        page.locator("#stop-reply").wait_for(state="visible")
        page.screenshot(path=str(SCREENSHOTS / "chat-pending-reply.png"), full_page=True)
        page.locator("#stop-reply").click()
        page.locator('#chatbot [data-testid="bot"]').last.get_by_text("Stopped").wait_for()
        page.screenshot(path=str(SCREENSHOTS / "chat-stopped-reply.png"), full_page=True)
        page.locator("#stop-reply").wait_for(state="hidden")
        with transaction(engine) as db:
            turn = db.scalars(select(Turn).order_by(Turn.id.desc()).limit(1)).one()
            turn_id, status = turn.id, turn.status
        assert status is TurnStatus.CANCELLED
    _worker_log_shows(
        service, f"reply {turn_id} skipped: it is cancelled"
    )  # the queued task, taken and skipped
    with transaction(engine) as db:
        turn = db.get_one(Turn, turn_id)
        assert (turn.status, turn.text, turn.model_version) == (TurnStatus.CANCELLED, None, None)
    assert not page.locator("#retry").is_visible()

    page.get_by_role("tab", name="Reading comprehension").click()
    with worker_paused(service):
        page.locator("#passage textarea").fill(PASSAGE)
        page.locator("#question textarea").fill("Where did Bob move?")
        page.locator("#ask").click()
        page.locator("#stop-question").wait_for(state="visible")
        page.locator("#stop-question").click()
        page.wait_for_function("() => document.querySelector('#answer textarea').value.includes('stopped')")
        page.locator("#stop-question").wait_for(state="hidden")
        with transaction(engine) as db:
            question = db.scalars(select(Question).order_by(Question.created_at.desc()).limit(1)).one()
            question_id, status = question.id, question.status
        assert status is QuestionStatus.CANCELLED
    _worker_log_shows(service, f"question {question_id} skipped: it is cancelled")
    with transaction(engine) as db:
        assert db.get_one(Question, question_id).answer is None
    page.get_by_role("tab", name="Chat").click()


def test_a_reload_opens_the_last_conversation(page: Any, service: Service) -> None:
    send(page, "the last thing I said")
    page.reload()
    open_page(page, service)
    page.locator('#chatbot [data-testid="user"]').last.get_by_text("the last thing I said").wait_for()
    assert user_messages(page)[0] == "a second conversation"  # the whole conversation, not only the last turn
    assert page.locator("#conversation-list input").input_value().startswith("a second conversation")


def _caret_clearance(page: Any) -> float:
    """Pixels between the end of the conversation list's text area and its caret (negative: text under it)."""
    return page.evaluate("""() => {
        const input = document.querySelector('#conversation-list input');
        const caret = document.querySelector('#conversation-list .icon-wrap').getBoundingClientRect();
        const text_end = input.getBoundingClientRect().right - parseFloat(getComputedStyle(input).paddingRight);
        return caret.left - text_end; }""")


def test_the_conversation_lists_text_stops_before_its_caret(page: Any) -> None:
    page.locator("#conversation-list input").click()
    page.get_by_role("option").filter(has_text=LONG_TITLE[:20]).click()
    page.locator('#chatbot [data-testid="user"]').get_by_text(LONG_TITLE).wait_for()
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(300)
        assert _caret_clearance(page) >= 0, f"the title runs under the caret at {width} px"
        assert (
            page.evaluate(
                "() => getComputedStyle(document.querySelector('#conversation-list input')).textOverflow"
            )
            == "ellipsis"
        )
    page.set_viewport_size({"width": 1280, "height": 1000})


def test_the_system_table_keeps_every_column_in_view_at_1280_and_390_px(page: Any, service: Service) -> None:
    # what a GPU worker with the four shipped models reports: the tiny test worker's record is much shorter
    fake = redis.Redis.from_url(service.env["REDIS_URL"])
    record = {
        "hostname": "gpu-0@inference-node-a.example.internal",
        "device": "cuda:0 (NVIDIA H200)",
        "versions": {
            "chat/en": "chat-en@5f0c2a19b7d4-1200",
            "chat/zh": "chat-zh@91ab33e0c2f1-900",
            "rc/en": "rc-en@a7d3e9f01c22-3100",
            "rc/zh": "rc-zh@0c4f5e6a7b8d-2800",
        },
        "queues": ["batch"],
        "last_seen": utcnow().isoformat(),
    }
    key = f"s2s:worker:{record['hostname']}"
    fake.set(key, json.dumps(record), ex=60)
    try:
        page.get_by_role("tab", name="System").click()
        page.get_by_role("button", name="Refresh").click()
        wait_text(page, "#workers", "gpu-0@inference-node-a.example.internal")
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 1000})
            page.wait_for_timeout(300)
            out_of_view = page.evaluate("""() => {
                const box = document.querySelector('#workers').getBoundingClientRect();
                return [...document.querySelectorAll('#workers th, #workers td')]
                    .filter(cell => cell.offsetParent !== null && cell.getBoundingClientRect().right > box.right + 1)
                    .map(cell => cell.innerText); }""")
            assert out_of_view == [], width
            assert page.evaluate("() => document.documentElement.scrollWidth") <= width
            page.screenshot(path=str(SCREENSHOTS / f"system-gpu-worker-{width}.png"), full_page=True)
    finally:
        page.set_viewport_size({"width": 1280, "height": 1000})
        fake.delete(key)
        fake.close()
    page.get_by_role("tab", name="Chat").click()


def test_the_upload_box_says_what_a_line_needs_and_lines_without_an_id_are_named_by_line(
    page: Any, tmp_path: Path
) -> None:
    page.get_by_role("tab", name="Batch jobs").click()
    help_text = page.locator("#batch-help").inner_text()
    assert "question" in help_text and "passage" in help_text and "optional" in help_text
    example = next(line for line in help_text.splitlines() if line.strip().startswith("{"))
    assert set(json.loads(example)) == {"id", "question", "passage"}  # the example is a real line
    upload = tmp_path / "training-style.jsonl"  # the README's training JSONL: no ids
    upload.write_text(
        "\n".join(
            json.dumps(line, ensure_ascii=False)
            for line in [
                {"question": QUESTION, "passage": PASSAGE, "answer": "Oslo"},
                {"question": ZH_QUESTION, "passage": ZH_PASSAGE, "answer": "杭州"},
            ]
        ),
        encoding="utf-8",
    )
    page.locator("#batch-file input[type=file]").set_input_files(str(upload))
    page.locator("#batch-submit").click()
    page.wait_for_function("() => document.querySelector('#batch-report textarea').value.includes('queued')")
    assert "2 item(s) queued (jsonl), 0 bad line(s)." in page.locator("#batch-report textarea").input_value()
    wait_text(page, "#jobs", "100%")
    page.locator("#job-export").click()
    results = page.locator('#job-downloads a[download$=".jsonl"]')
    results.wait_for()
    with urllib.request.urlopen(results.get_attribute("href"), timeout=10) as response:
        rows = [json.loads(line) for line in response.read().decode().splitlines()]
    assert [(row["id"], row["status"]) for row in rows] == [("1", "done"), ("2", "done")]
    page.get_by_role("tab", name="Chat").click()


def _job_row(page: Any, job_id: str) -> list[str]:
    """The cells of the job's row as the jobs table draws them (gr.Dataframe: div rows, beside a hidden <table>
    it sizes columns with)."""
    wait_text(page, "#jobs", job_id)
    return page.evaluate(
        """(jobId) => [...document.querySelectorAll('#jobs .virtual-row')]
        .filter(row => row.innerText.includes(jobId))
        .map(row => [...row.querySelectorAll('.body-cell')].map(cell => cell.innerText.trim()))[0]""",
        job_id,
    )


def _finish(engine: Any, item_ids: list[int], seconds_ago: float) -> None:
    """What a worker writes when it answers items, as if it had done so `seconds_ago` seconds ago."""
    with transaction(engine) as db:
        for item_id in item_ids:
            batch_jobs.record_item_answer(
                db, item_id=item_id, answer="Oslo", score=-0.1, model_version="tiny@test"
            )
        db.execute(
            update(QAJobItem)
            .where(QAJobItem.id.in_(item_ids))
            .values(finished_at=utcnow() - timedelta(seconds=seconds_ago))
        )


def test_a_jobs_eta_waits_until_the_rate_is_known(page: Any, engine: Any) -> None:
    # A job that is never queued, so no worker touches it: its items are finished here, on a known clock.
    items = [{"item_key": f"q{i}", "question": QUESTION, "passage": PASSAGE} for i in range(40)]
    owner = _owner(page, engine)
    with transaction(engine) as db:
        job_id = batch_jobs.create_job(db, owner=owner, filename="timed.jsonl", items=items)
        db.execute(
            update(QAJob)
            .where(QAJob.id == job_id)
            .values(status=JobStatus.RUNNING, started_at=utcnow() - timedelta(seconds=100))
        )
        item_ids = list(
            db.scalars(select(QAJobItem.id).where(QAJobItem.job_id == job_id).order_by(QAJobItem.position))
        )
    page.get_by_role("tab", name="Batch jobs").click()
    try:
        _finish(engine, item_ids[:8], seconds_ago=60)  # the first chunk, after 40 s of queue wait and warm-up
        page.wait_for_timeout(2500)
        row = _job_row(page, job_id)
        # counted from the start this was "400 s"; the next refreshes would have said 3 min, then 67 s
        assert row[3:6] == ["8", "0", "32"] and row[-1] == "–"
        _finish(engine, item_ids[8:16], seconds_ago=40)
        _finish(engine, item_ids[16:24], seconds_ago=20)
        deadline = time.monotonic() + 30
        while _job_row(page, job_id)[3] != "24":
            assert time.monotonic() < deadline, "the jobs table never showed the 24 answered items"
            page.wait_for_timeout(300)
        # 16 items in the 40 s after the first chunk: 2.5 s each, so the 16 pending ones need about 40 s
        assert _job_row(page, job_id)[-1] == "about 40 s"
    finally:
        with transaction(engine) as db:
            batch_jobs.cancel_job(db, job_id=job_id, owner=owner)
    page.get_by_role("tab", name="Chat").click()


TABS = {
    "chat": "Chat",
    "reading-comprehension": "Reading comprehension",
    "batch-jobs": "Batch jobs",
    "system": "System",
}


def _fill_every_tab(page: Any, tmp_path: Path, *, chinese: bool) -> None:
    send(page, "你好，今天天气怎么样？" if chinese else "hello, how is the weather today?")
    send(page, "谢谢 🙂" if chinese else "thanks 🙂")
    page.get_by_role("tab", name="Reading comprehension").click()
    page.locator("#passage textarea").fill(ZH_PASSAGE if chinese else PASSAGE)
    page.locator("#question textarea").fill(ZH_QUESTION if chinese else QUESTION)
    page.locator("#ask").click()
    page.wait_for_function("() => document.querySelector('#attention-view .attention .t')")
    page.get_by_role("tab", name="Batch jobs").click()
    upload = tmp_path / ("问题.jsonl" if chinese else "questions.jsonl")
    upload.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "id": "q1",
                        "question": ZH_QUESTION if chinese else QUESTION,
                        "passage": ZH_PASSAGE if chinese else PASSAGE,
                    },
                    ensure_ascii=False,
                ),
                "{not json",
            ]
        ),
        encoding="utf-8",
    )
    page.locator("#batch-file input[type=file]").set_input_files(str(upload))
    page.locator("#batch-submit").click()
    wait_text(page, "#jobs", "100%")


@pytest.mark.parametrize(("language", "locale"), [("en", "en-US"), ("zh", "zh-CN")])
def test_every_tab_fits_and_is_photographed_in_english_and_chinese_at_1280_and_390_px(
    browser: Any, service: Service, tmp_path: Path, language: str, locale: str
) -> None:
    page = new_page(browser, service, locale=locale)
    try:
        _fill_every_tab(page, tmp_path, chinese=language == "zh")
        for name, label in TABS.items():
            page.get_by_role("tab", name=label).click()
            page.wait_for_timeout(500)
            for width in (1280, 390):
                page.set_viewport_size({"width": width, "height": 1000})
                page.wait_for_timeout(400)
                assert page.evaluate("() => document.documentElement.scrollWidth") <= width, (name, width)
                page.screenshot(path=str(SCREENSHOTS / f"{name}-{language}-{width}.png"), full_page=True)
            page.set_viewport_size({"width": 1280, "height": 1000})
    finally:
        page.context.close()
