"""ui.handlers against a real SQLite file, with only the workers.client boundary faked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
import redis
import sqlalchemy.exc
from sqlalchemy import func, select

from flows import exports
from flows.uploads import BatchFileError
from settings import get_settings
from storage import conversations, questions
from storage.db import transaction
from storage.errors import EmptyInput, InputTooLong, NotFound
from storage.models import Passage
from tests.ui.conftest import ATTENTION, OTHER, OWNER, PASSAGE, FakeQueue
from ui import attention, events, handlers
from workers.client import NoWorker


def _answer_as_worker(question_id: str) -> None:
    with transaction(handlers.engine()) as db:
        questions.save_answer(
            db,
            question_id=question_id,
            answer="Oslo",
            score=-0.01,
            model_version="rc-en@test",
            n_best=[{"text": "Oslo", "score": -0.01}, {"text": "Oslo.", "score": -6.6}],
            attention=ATTENTION,
        )


def _reply_as_worker(turn_id: int, text: str) -> None:
    with transaction(handlers.engine()) as db:
        conversations.save_reply(db, turn_id=turn_id, text=text, model_version="chat@test")


def test_send_message_stores_a_pending_reply_and_enqueues_it(queue: FakeQueue) -> None:
    sent = handlers.send_message(OWNER, None, "hello there")
    assert queue.replies == [sent.reply_turn_id]
    assert handlers.load_history(OWNER, sent.conversation_id) == [
        {"role": "user", "content": "hello there", "status": "done", "model_version": None},
        {"role": "assistant", "content": handlers.PENDING_TEXT, "status": "pending", "model_version": None},
    ]
    assert handlers.poll_reply(OWNER, sent.reply_turn_id)["status"] == "pending"


def test_a_saved_reply_is_read_back_from_the_database_after_a_restart(queue: FakeQueue) -> None:
    sent = handlers.send_message(OWNER, None, "你好，今天怎么样？")
    _reply_as_worker(sent.reply_turn_id, "很好！")
    handlers.engine().dispose()
    handlers._engine_for.cache_clear()  # a new UI process: nothing but the database is left
    assert handlers.load_history(OWNER, sent.conversation_id)[-1] == {
        "role": "assistant",
        "content": "很好！",
        "status": "done",
        "model_version": "chat@test",
    }
    assert handlers.list_conversations(OWNER)[0]["title"] == "你好，今天怎么样？"


def test_a_second_message_continues_the_same_conversation(queue: FakeQueue) -> None:
    first = handlers.send_message(OWNER, None, "one")
    _reply_as_worker(first.reply_turn_id, "two")
    second = handlers.send_message(OWNER, first.conversation_id, "three")
    assert second.conversation_id == first.conversation_id
    assert [m["content"] for m in handlers.load_history(OWNER, first.conversation_id)][:3] == [
        "one",
        "two",
        "three",
    ]


def test_empty_and_too_long_messages_are_refused_with_a_readable_reason(queue: FakeQueue) -> None:
    with pytest.raises(EmptyInput) as empty:
        handlers.send_message(OWNER, None, "   ")
    assert handlers.describe_error(empty.value) == "The message is empty: please type something."
    with pytest.raises(InputTooLong) as long:
        handlers.send_message(OWNER, None, "x" * 201)
    assert handlers.describe_error(long.value) == "The message is too long: 201 characters, the limit is 200."
    assert queue.replies == [] and handlers.list_conversations(OWNER) == []


def test_no_worker_online_stores_nothing_and_says_so(queue: FakeQueue) -> None:
    queue.workers = []
    with pytest.raises(NoWorker) as error:
        handlers.send_message(OWNER, None, "hello")
    assert "No worker is online" in handlers.describe_error(error.value)
    assert handlers.list_conversations(OWNER) == []


def test_a_reply_that_cannot_be_queued_fails_and_can_be_retried(
    queue: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import client

    def broken(turn_id: int) -> str:
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(client, "enqueue_reply", broken)
    with pytest.raises(redis.ConnectionError) as error:
        handlers.send_message(OWNER, None, "hello")
    assert "Redis" in handlers.describe_error(error.value)
    conversation_id = handlers.list_conversations(OWNER)[0]["id"]
    assert handlers.load_history(OWNER, conversation_id)[-1]["content"].startswith("⚠️ The reply failed")
    monkeypatch.setattr(client, "enqueue_reply", queue.enqueue_reply)
    turn_id = handlers.retry_reply(OWNER, conversation_id)
    assert queue.replies == [turn_id]
    assert handlers.poll_reply(OWNER, turn_id)["status"] == "pending"


def _events(generator: Any, *, most: int = 9) -> tuple[list[tuple[Any, ...]], BaseException | None]:
    """Run one of ui.events' async generator events: what it yielded (up to `most` updates), what it raised."""

    async def collect() -> tuple[list[tuple[Any, ...]], BaseException | None]:
        updates = []
        try:
            async for update in generator:
                updates.append(update)
                if len(updates) == most:
                    await generator.aclose()
                    break
        except Exception as error:
            return updates, error
        return updates, None

    return asyncio.run(collect())


KEY = OWNER.removeprefix("anon:")


def test_the_retry_button_shows_only_while_a_reply_has_failed(
    queue: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import client

    def broken(turn_id: int) -> str:
        raise redis.ConnectionError("connection refused")

    decoding = handlers.decoding_panel_defaults()
    sent = handlers.send_message(OWNER, None, "hello")
    _reply_as_worker(sent.reply_turn_id, "hi")
    opened = asyncio.run(events.open_conversation(sent.conversation_id, KEY, None))  # type: ignore[arg-type]
    assert opened[2] == {"__type__": "update", "visible": False}
    monkeypatch.setattr(client, "enqueue_reply", broken)
    updates, error = _events(
        events.send_message("again", sent.conversation_id, KEY, *decoding.values(), None)
    )
    chat, _, _, _, retry, stop, notice = updates[-1]  # the failed reply is shown, with the button to retry it
    assert error is None and notice["visible"] is True and "Redis" in notice["value"]  # said, not raised
    assert chat[-1]["content"].startswith("⚠️ The reply failed") and retry["visible"] is True
    assert stop["visible"] is False
    assert asyncio.run(events.open_conversation(sent.conversation_id, KEY, None))[2]["visible"] is True  # type: ignore[arg-type]
    monkeypatch.setattr(client, "enqueue_reply", queue.enqueue_reply)
    updates, error = _events(events.retry_reply(sent.conversation_id, KEY, *decoding.values(), None), most=1)
    _, _, _, _, retry, stop, _ = updates[0]
    assert error is None and retry["visible"] is False and stop["visible"] is True  # pending again: stoppable
    assert asyncio.run(events.new_conversation())[4]["visible"] is False


def test_each_reply_shows_the_model_version_that_wrote_it_escaped(queue: FakeQueue) -> None:
    sent = handlers.send_message(OWNER, None, "hello")
    with transaction(handlers.engine()) as db:
        conversations.save_reply(db, turn_id=sent.reply_turn_id, text="hi <b>", model_version="chat-en@<i>1")
    shown = events.for_display(handlers.load_history(OWNER, sent.conversation_id))
    assert shown[0] == {"role": "user", "content": "hello"}
    assert shown[1] == {
        "role": "assistant",
        "content": 'hi &lt;b&gt;\n<span class="model-version">model: chat-en@&lt;i&gt;1</span>',
    }
    pending = handlers.send_message(OWNER, sent.conversation_id, "more")
    assert (
        "model-version"
        not in events.for_display(handlers.load_history(OWNER, pending.conversation_id))[-1]["content"]
    )


def test_retry_without_a_failed_reply_is_a_user_error(queue: FakeQueue) -> None:
    sent = handlers.send_message(OWNER, None, "hello")
    with pytest.raises(handlers.UserError, match="no failed reply"):
        handlers.retry_reply(OWNER, sent.conversation_id)


def test_one_owner_never_sees_another_owners_conversations(queue: FakeQueue) -> None:
    sent = handlers.send_message(OWNER, None, "private")
    assert handlers.list_conversations(OTHER) == []
    with pytest.raises(NotFound):
        handlers.load_history(OTHER, sent.conversation_id)
    with pytest.raises(NotFound):
        handlers.poll_reply(OTHER, sent.reply_turn_id)
    with pytest.raises(NotFound):
        handlers.delete_conversation(OTHER, sent.conversation_id)


def test_rename_and_delete_a_conversation(queue: FakeQueue) -> None:
    sent = handlers.send_message(OWNER, None, "hello")
    handlers.rename_conversation(OWNER, sent.conversation_id, "Greetings")
    assert handlers.list_conversations(OWNER)[0]["title"] == "Greetings"
    handlers.delete_conversation(OWNER, sent.conversation_id)
    assert handlers.list_conversations(OWNER) == []


def test_owner_is_the_login_name_or_a_long_enough_browser_key() -> None:
    assert handlers.resolve_owner(username="ann", owner_key=None) == "user:ann"
    key = handlers.new_owner_key()
    assert handlers.resolve_owner(username=None, owner_key=key) == f"anon:{key}"
    with pytest.raises(handlers.UserError):
        handlers.resolve_owner(username=None, owner_key="short")


def test_decoding_settings_are_checked() -> None:
    assert handlers.check_decoding(beam_size=4.0, length_penalty=0.6, max_length=30.0) == {
        "beam_size": 4,
        "length_penalty": 0.6,
        "max_length": 30,
    }
    with pytest.raises(handlers.UserError, match="beam size"):
        handlers.check_decoding(beam_size=0, length_penalty=1.0, max_length=10)


def test_decoding_sliders_start_at_the_chat_models_own_settings(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "models.json").write_text(json.dumps({"rc/en": "rc", "chat/en": "talk", "chat/zh": "talk"}))
    (tmp_path / "talk").mkdir()
    (tmp_path / "talk" / "decode.json").write_text(
        json.dumps({"beam_size": 7, "max_length": 33, "top_p": 0.9})
    )
    monkeypatch.setenv("S2S_CHECKPOINT", str(tmp_path))
    get_settings.cache_clear()
    assert handlers.decoding_panel_defaults() == {"beam_size": 7, "length_penalty": 1.0, "max_length": 33}
    monkeypatch.setenv("S2S_BEAM_SIZE", "4")  # what the operator set is what workers decode with
    get_settings.cache_clear()
    assert handlers.decoding_panel_defaults()["beam_size"] == 4
    (tmp_path / "talk" / "decode.json").write_text("[1, 2]")  # broken: common values, the panel still opens
    monkeypatch.delenv("S2S_BEAM_SIZE")
    get_settings.cache_clear()
    assert handlers.decoding_panel_defaults() == {"beam_size": 5, "length_penalty": 1.0, "max_length": 48}
    get_settings.cache_clear()


def test_untouched_decoding_sliders_leave_the_model_defaults_alone() -> None:
    start = handlers.decoding_panel_defaults()
    assert handlers.check_decoding(**start) is None
    assert handlers.check_decoding(**{**start, "beam_size": start["beam_size"] + 1}) == {
        "beam_size": start["beam_size"] + 1
    }


def test_asking_twice_about_one_passage_stores_it_once(queue: FakeQueue) -> None:
    first = handlers.ask_question(OWNER, PASSAGE, "Where was Bob born?")
    second = handlers.ask_question(OWNER, PASSAGE, "Where did Bob move?")
    assert queue.questions == [first, second]
    with transaction(handlers.engine()) as db:
        assert db.scalar(select(func.count()).select_from(Passage)) == 1


def test_an_answer_comes_back_with_n_best_and_attention_views(queue: FakeQueue) -> None:
    question_id = handlers.ask_question(OWNER, PASSAGE, "Where was Bob born?")
    assert handlers.question_result(OWNER, question_id)["status"] == "pending"
    _answer_as_worker(question_id)
    result = handlers.question_result(OWNER, question_id)
    answer, score, n_best, segments, view, details = events.answer_views(result)
    assert (answer, score) == ("Oslo", -0.01)
    assert n_best == [[1, "Oslo", -0.01], [2, "Oslo.", -6.6]]
    assert ("Oslo", attention.ANSWER) in segments
    assert "".join(text for text, _ in segments) == PASSAGE
    assert 'title="Oslo: weight 0.900 while writing “Oslo”"' in view
    assert "rc-en@test" in details and "copied from the passage: 90%" in details


def test_highlights_follow_byte_pieces_of_chinese_text() -> None:
    passage = "鲍勃出生在奥斯陆。"
    pieces = [
        "<rc>",
        "<sep>",
        "▁",
        "<0xE9>",
        "<0xB2>",
        "<0x8D>",
        "勃",
        "出",
        "生",
        "在",
        "<0xE5>",
        "<0xA5>",
        "<0xA5>",
        "斯",
        "陆",
        "。",
    ]
    weights = [0.0] * len(pieces)
    weights[pieces.index("斯")] = 0.5
    weights[10] = weights[11] = weights[12] = 0.1  # the three bytes of 奥
    record = {"source_tokens": pieces, "attention": [weights], "output_tokens": ["奥斯"], "span": [5, 7]}
    segments = attention.highlight_segments(passage, record)
    assert "".join(text for text, _ in segments) == passage
    assert ("奥斯", attention.ANSWER) in segments
    assert attention.passage_weights(passage, record)[5] == pytest.approx(0.3)


def test_an_empty_question_or_passage_is_refused(queue: FakeQueue) -> None:
    with pytest.raises(EmptyInput, match="question"):
        handlers.ask_question(OWNER, PASSAGE, "")
    with pytest.raises(EmptyInput, match="passage"):
        handlers.ask_question(OWNER, " ", "Where?")


def _jsonl(*records: Any) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records).encode()


def test_a_batch_upload_reports_its_bad_line_and_queues_the_rest(queue: FakeQueue) -> None:
    data = _jsonl(
        {"id": "q1", "question": "Where was Bob born?", "passage": PASSAGE},
        "{not json",
        {"id": "q2", "question": "小明出生在哪里？", "passage": "小明出生在杭州。"},
    )
    report = handlers.submit_batch(OWNER, data, "questions.jsonl")
    assert (report["items"], report["format"], report["worker_online"]) == (2, "jsonl", True)
    assert report["errors"][0]["line"] == 2 and "invalid JSON" in report["errors"][0]["reason"]
    assert queue.jobs == [report["job_id"]]
    status = handlers.job_status(OWNER, report["job_id"])
    assert (status["state"], status["total"], status["pending"]) == ("queued", 2, 2)
    assert status["errors"][0]["where"] == "line 2"
    assert [row[0] for row in events.job_rows(handlers.list_jobs(OWNER))] == [report["job_id"]]
    assert handlers.list_jobs(OTHER) == []


def test_a_file_that_is_not_utf8_text_is_refused_clearly(queue: FakeQueue, tmp_path: Path) -> None:
    path = tmp_path / "scan.csv"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(BatchFileError) as error:
        handlers.submit_batch_file(OWNER, path)
    assert "not UTF-8" in handlers.describe_error(error.value)
    with pytest.raises(handlers.UserError, match="cannot be read"):
        handlers.submit_batch_file(OWNER, tmp_path / "missing.jsonl")


def test_cancel_and_export_a_job(queue: FakeQueue, tmp_path: Path) -> None:
    data = _jsonl(*({"id": f"q{i}", "question": "Where was Bob born?", "passage": PASSAGE} for i in range(3)))
    job_id = handlers.submit_batch(OWNER, data, "q.jsonl")["job_id"]
    assert handlers.cancel_job(OWNER, job_id) is True
    assert handlers.cancel_job(OWNER, job_id) is False
    assert queue.cancelled == [job_id]
    assert handlers.job_status(OWNER, job_id)["state"] == "cancelled"
    assert (
        events.job_rows(handlers.list_jobs(OWNER))[0][-2] == "cancelled at 0%"
    )  # not "100%": nothing answered
    jsonl, csv_path, squad = exports.write_exports(handlers.job_results(OWNER, job_id), job_id, tmp_path)
    assert json.loads(Path(jsonl).read_text().splitlines()[0])["status"] == "cancelled"
    assert Path(csv_path).read_text().startswith("id,question,answer,score,status,error")
    assert json.loads(Path(squad).read_text()) == {"q0": "", "q1": "", "q2": ""}


def test_the_job_message_boxes_show_only_when_they_have_something_to_say(
    queue: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _jsonl({"id": "q", "question": "Where was Bob born?", "passage": PASSAGE})
    job_id = handlers.submit_batch(OWNER, data, "q.jsonl")["job_id"]
    problem = asyncio.run(events.refresh_jobs(job_id, KEY, None))[-1]  # type: ignore[arg-type]
    assert problem == {"__type__": "update", "value": "", "visible": False}
    assert asyncio.run(events.cancel_job(job_id, KEY, None)) == {  # type: ignore[arg-type]
        "__type__": "update",
        "value": f"Job {job_id} cancelled.",
        "visible": True,
    }

    def unreachable(owner: str) -> list[dict[str, Any]]:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("unable to open database file"))

    monkeypatch.setattr(handlers, "list_jobs", unreachable)
    problem = asyncio.run(events.refresh_jobs(job_id, KEY, None))[-1]  # type: ignore[arg-type]
    assert problem["visible"] is True and "database is unreachable" in problem["value"]


def test_system_status_lists_workers_and_queue_depths(queue: FakeQueue) -> None:
    status = handlers.system_status()
    assert status["workers"][0]["versions"] == "rc/en=rc-en@1234"
    assert status["queues"] == {"interactive": 0, "batch": 2}


def test_unreachable_redis_and_database_have_readable_messages() -> None:
    assert "Redis" in handlers.describe_error(redis.ConnectionError("refused"))
    db_error = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("unable to open database file"))
    assert (
        handlers.describe_error(db_error)
        == "The database is unreachable right now. Please try again shortly."
    )


def test_an_empty_message_is_said_in_the_notice_line_and_raises_nothing(queue: FakeQueue) -> None:
    updates, error = _events(
        events.send_message("  ", "", KEY, *handlers.decoding_panel_defaults().values(), None)
    )
    assert error is None and len(updates) == 1
    *untouched, notice = updates[0]
    assert all(update == gr.skip() for update in untouched)  # the message box keeps what was typed
    assert notice["visible"] is True and "The message is empty" in notice["value"]


def test_stopping_a_pending_reply_or_question_cancels_it_and_says_so_when_it_had_arrived(
    queue: FakeQueue,
) -> None:
    sent = handlers.send_message(OWNER, None, "hello")
    assert handlers.stop_reply(OWNER, sent.conversation_id) is True
    assert handlers.stop_reply(OWNER, sent.conversation_id) is False
    assert handlers.poll_reply(OWNER, sent.reply_turn_id)["status"] == "cancelled"
    assert handlers.load_history(OWNER, sent.conversation_id)[-1]["content"] == handlers.CANCELLED_TEXT
    question_id = handlers.ask_question(OWNER, PASSAGE, "Where was Bob born?")
    _answer_as_worker(question_id)
    assert asyncio.run(events.stop_question(question_id, KEY, None))[1]["value"].endswith(  # type: ignore[arg-type]
        "The answer had already arrived.</div>"
    )
    other = handlers.ask_question(OWNER, PASSAGE, "Who moved?")
    assert handlers.stop_question(OWNER, other) is True
    assert handlers.question_result(OWNER, other)["status"] == "cancelled"
    with pytest.raises(NotFound):
        handlers.stop_question(OTHER, other)


def test_etas_are_round_figures_and_a_dash_until_known() -> None:
    assert [events._eta(s) for s in (None, 4.0, 41.0, 400.0, 9000.0)] == [
        "–",
        "a few seconds",
        "about 40 s",
        "about 7 min",
        "about 2.5 h",
    ]


def test_the_workers_table_escapes_its_cells_and_puts_each_model_version_on_a_line() -> None:
    table = events.workers_table(
        [
            {
                "worker": "<b>w</b>",
                "versions": "chat/en=a@1, rc/en=b@2",
                "device": "cpu",
                "queues": "batch",
                "last_seen": "2026-12-03T18:24:09.364783+00:00",
            }
        ]
    )
    assert "&lt;b&gt;w&lt;/b&gt;" in table and "chat/en=a@1<br>rc/en=b@2" in table
    assert "<th>last seen</th>" in table and "<td>18:24:09 UTC</td>" in table
