"""The UI's HTTP API under hostile input and hostile callers, against a real worker (the tiny checkpoint), a real
Redis and the UI process, on SQLite and again on PostgreSQL when DATABASE_URL names one.

- Hostile text through /chat, /answer and /batch_submit (gradio_client): each input is either refused with one
  readable message and nothing stored, or stored exactly as sent and answered.
- Bytes that are not UTF-8 in the request body: refused by the HTTP layer, nothing stored.
- Owner isolation: a second owner key, calling the named endpoints and also the UI's own events by their
  fn_index over raw HTTP (as a browser does, which anyone can imitate), cannot read, send to, rename, delete,
  retry, cancel or export the first owner's conversation or job by its id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from storage import migrate
from storage.db import make_engine, transaction
from storage.models import Conversation, JobStatus, QAJob, QAJobItem, Question, Role, Turn
from tests.storage.conftest import BACKENDS, empty_database
from tests.workers.conftest import REPO_ROOT
from tests.workers.service_fixtures import redis_for_tests, service_env, start_worker, stop_worker

pytestmark = pytest.mark.slow

MAX_MESSAGE = 300
MAX_QUESTION = 200
MAX_PASSAGE = 3000
MAX_UPLOAD = 100_000
PER_MINUTE = 6  # requests one owner key may send in a minute (every other test sends at most 3 per key)
PASSAGE = "Bob was born in Oslo. Later Bob moved to Lima for work."
QUESTION = "Where was Bob born?"


class UI:
    def __init__(self, url: str, engine: Engine, tmp: Path) -> None:
        self.url, self.engine, self.tmp = url, engine, tmp
        from gradio_client import Client

        self.client = Client(url, verbose=False)
        with urllib.request.urlopen(url + "config", timeout=30) as response:
            config = json.load(response)
        self.fn_index = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}

    def predict(self, *args: Any, api_name: str) -> Any:
        return self.client.predict(*args, api_name=api_name)

    def call_raw(self, api_name: str, body: bytes) -> tuple[str, str]:
        """POST a request body as-is to a named endpoint's REST route: ("complete" | "error", what came back)."""
        request = urllib.request.Request(
            f"{self.url}gradio_api/call/{api_name}", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            event_id = json.load(response)["event_id"]
        with urllib.request.urlopen(f"{self.url}gradio_api/call/{api_name}/{event_id}", timeout=90) as stream:
            text = stream.read().decode(errors="replace")
        return ("error" if "event: error" in text else "complete"), text

    def event(self, api_name: str, *data: Any) -> tuple[bool, Any]:
        """Call one of the UI's own (private) events over raw HTTP, as the browser does: (success, output)."""
        session = uuid.uuid4().hex
        body = json.dumps(
            {
                "data": list(data),
                "fn_index": self.fn_index[api_name],
                "session_hash": session,
                "event_data": None,
                "trigger_id": None,
            }
        ).encode()
        request = urllib.request.Request(
            self.url + "gradio_api/queue/join", data=body, headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=30).read()
        with urllib.request.urlopen(
            f"{self.url}gradio_api/queue/data?session_hash={session}", timeout=60
        ) as stream:
            for raw in stream:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    return bool(message.get("success")), output.get("error") or output.get("data")
        raise AssertionError("the event never completed")


@pytest.fixture(scope="module", params=BACKENDS)
def ui(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    from supervisor.embedded_redis import free_port

    tmp = tmp_path_factory.mktemp(f"ui-api-{request.param}")
    with empty_database(request.param, tmp) as url, redis_for_tests(tmp) as redis_url:
        database_url = url.render_as_string(hide_password=False)
        migrate.upgrade(database_url)
        port = free_port()
        env = service_env(
            redis_url,
            database_url,
            S2S_DATA_DIR=str(tmp / "data"),
            S2S_UI_PORT=str(port),
            S2S_REQUEST_TIMEOUT_S="60",
            GRADIO_ANALYTICS_ENABLED="False",
            S2S_MAX_MESSAGE_CHARS=str(MAX_MESSAGE),
            S2S_MAX_QUESTION_CHARS=str(MAX_QUESTION),
            S2S_MAX_PASSAGE_CHARS=str(MAX_PASSAGE),
            S2S_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
            S2S_MAX_BATCH_ITEMS="50",
            S2S_OWNER_REQUESTS_PER_MINUTE=str(PER_MINUTE),
        )
        worker = start_worker(env, tmp / "worker.log", wait_s=180)
        process = subprocess.Popen(
            [sys.executable, "-m", "ui.app"],
            env=env,
            cwd=REPO_ROOT,
            stdout=(tmp / "ui.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        engine = make_engine(database_url)
        base = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    urllib.request.urlopen(base, timeout=2)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((tmp / "ui.log").read_text()[-3000:]) from None
                    time.sleep(0.3)
            yield UI(base, engine, tmp)
            # Every hostile input met a handled error: no traceback through this repository's code (Gradio logs
            # its own when it refuses a value outside a dropdown's choices, which is a refusal too).
            log = (tmp / "ui.log").read_text(errors="replace")
            ours = [
                f'File "{REPO_ROOT / package}/' for package in ("ui", "flows", "storage", "workers", "model")
            ]
            assert not any(prefix in log for prefix in ours), log[-3000:]
        finally:
            engine.dispose()
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            stop_worker(worker)


def _key() -> str:
    return uuid.uuid4().hex


def _turns(ui: UI, owner_key: str) -> list[tuple[Role, str | None]]:
    with transaction(ui.engine) as db:
        rows = db.execute(
            select(Turn.role, Turn.text)
            .join(Conversation)
            .where(Conversation.owner == f"anon:{owner_key}")
            .order_by(Turn.id)
        ).all()
    return [(row.role, row.text) for row in rows]


def _owned(ui: UI, model: type, owner_key: str) -> int:
    with transaction(ui.engine) as db:
        return int(
            db.scalar(select(func.count()).select_from(model).where(model.owner == f"anon:{owner_key}")) or 0
        )


def _refused(ui: UI, *args: Any, api_name: str) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        ui.predict(*args, api_name=api_name)
    message = str(caught.value)
    assert "Something went wrong" not in message and "\n" not in message.strip(), message
    return message


# --- hostile text --------------------------------------------------------------------------------------------

STORED_AS_SENT = {
    "control characters": "bell\x07 backspace\x08 vertical tab\x0b form feed\x0c escape\x1b end",
    "ANSI escapes": "\x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[2J cleared?",
    "one very long token": "a" * MAX_MESSAGE,
    "mixed scripts": "hello 你好 привет γειά こんにちは 안녕 नमस्ते",
    "right to left": "שלום עולם مرحبا بالعالم \u202eevil\u202c \u200fmark",
    "HTML and script": '<script>alert(1)</script><img src=x onerror="alert(2)"> &amp; </textarea>',
    "SQL-looking": "'; DROP TABLE turns; -- \" OR 1=1; SELECT * FROM conversations WHERE '1'='1",
    "emoji and combining marks": "👩‍👩‍👧 e\u0301 Z̷̢a̶l̸g̵o",
    "zero-width and BOM": "\ufeffzero\u200bwidth\u2060joiner",
}

REFUSED = {
    "empty": ("", "empty"),
    "whitespace": (" \t\n\u3000 ", "empty"),
    "oversized": ("x" * (MAX_MESSAGE + 1), "too long"),
    "NUL": ("before\x00after", "NUL"),
}


@pytest.mark.parametrize("name", list(STORED_AS_SENT))
def test_hostile_chat_text_is_stored_as_sent_and_answered(ui: UI, name: str) -> None:
    text = STORED_AS_SENT[name]
    key = _key()
    outcome = ui.predict(text, "", key, api_name="/chat")
    assert outcome["status"] == "done" and outcome["reply"], outcome
    assert _turns(ui, key) == [(Role.USER, text), (Role.ASSISTANT, outcome["reply"])]


@pytest.mark.parametrize("name", list(REFUSED))
def test_hostile_chat_text_is_refused_in_one_line_and_nothing_stored(ui: UI, name: str) -> None:
    text, said = REFUSED[name]
    key = _key()
    message = _refused(ui, text, "", key, api_name="/chat")
    assert said in message, message
    assert _turns(ui, key) == [] and _owned(ui, Conversation, key) == 0


@pytest.mark.parametrize(
    ("passage", "question", "said"),
    [
        ("", QUESTION, "empty"),
        (PASSAGE, "   ", "empty"),
        ("p" * (MAX_PASSAGE + 1), QUESTION, "too long"),
        (PASSAGE, "q" * (MAX_QUESTION + 1), "too long"),
        (PASSAGE + "\x00", QUESTION, "NUL"),
    ],
)
def test_hostile_questions_are_refused_and_nothing_stored(
    ui: UI, passage: str, question: str, said: str
) -> None:
    key = _key()
    assert said in _refused(ui, passage, question, key, api_name="/answer")
    assert _owned(ui, Question, key) == 0


@pytest.mark.parametrize(
    ("passage", "question"),
    [
        (PASSAGE, "<b>Where</b> was Bob born?<script>x()</script>"),
        (PASSAGE, "Where was Bob born?'; DELETE FROM questions; --"),
        (PASSAGE, "\x1b[1mWhere\x1b[0m was Bob born?"),
        # a very long single token in the passage (in the question, 150 characters of one letter leave the tiny
        # checkpoint's 64-token source no room for the passage: it answers nothing, and says so)
        (PASSAGE + " " + "x" * 2000 + ".", QUESTION),
        (PASSAGE.replace(". ", ".\r\n\u3000"), "Where was Bob born? 鲍勃出生在哪里？ \u202eكان"),
    ],
)
def test_hostile_questions_are_stored_as_sent_and_answered(ui: UI, passage: str, question: str) -> None:
    key = _key()
    outcome = ui.predict(passage, question, key, api_name="/answer")
    assert outcome["status"] == "done" and outcome["answer"], outcome
    with transaction(ui.engine) as db:
        assert db.scalars(select(Question.question).where(Question.owner == f"anon:{key}")).all() == [
            question
        ]


def test_a_lone_surrogate_sent_as_a_json_escape_is_refused_and_nothing_stored(ui: UI) -> None:
    key = _key()  # JSON can carry "\ud800" although no UTF-8 can: the server gets a str it cannot store
    outcome, text = ui.call_raw("chat", json.dumps({"data": ["broken \ud800 text", "", key]}).encode())
    assert outcome == "error" and "surrogate" in text, text
    assert _turns(ui, key) == [] and _owned(ui, Conversation, key) == 0


def test_bytes_that_are_not_utf8_are_refused_by_the_http_layer(ui: UI) -> None:
    key = _key()
    body = b'{"data": ["caf\xe9 \xff\xfe", "", "' + key.encode() + b'"]}'
    try:
        outcome, text = ui.call_raw("chat", body)
        assert outcome == "error", text
    except urllib.error.HTTPError as error:
        assert 400 <= error.code < 500, error.code
    assert _turns(ui, key) == [] and _owned(ui, Conversation, key) == 0


# --- hostile batch files through /batch_submit -------------------------------------------------------------


def _line(item_id: str, question: str = QUESTION, passage: str = PASSAGE) -> str:
    return json.dumps({"id": item_id, "question": question, "passage": passage}, ensure_ascii=False)


@pytest.mark.parametrize(
    ("content", "filename", "items", "bad_lines"),
    [
        (
            "\n".join([_line("a"), '{"id": "b", "question": "Where', _line("c")]),
            "t.jsonl",
            2,
            [2],
        ),  # truncated
        ("\n".join([_line("a"), _line("a"), _line("b")]), "dup.jsonl", 2, [2]),  # duplicate ids
        (
            "\n".join(
                [_line("a"), _line("b", question="Wh\x00ere?"), _line("c", passage="<script>x</script>")]
            ),
            "nul.jsonl",
            2,
            [2],
        ),
        (
            'id,question,passage\na,Where was Bob born?,"Bob was born in Oslo.\nb,"Who?,Bob\n',
            "broken.csv",
            None,
            None,
        ),
    ],
)
def test_hostile_batch_files_report_each_bad_line_and_store_the_rest(
    ui: UI, content: str, filename: str, items: int | None, bad_lines: list[int] | None
) -> None:
    key = _key()
    report = ui.predict(content, filename, key, api_name="/batch_submit")
    with transaction(ui.engine) as db:
        jobs = db.scalars(select(QAJob).where(QAJob.owner == f"anon:{key}")).all()
        assert [job.id for job in jobs] == [report["job_id"]]
        stored = db.scalar(
            select(func.count()).select_from(QAJobItem).where(QAJobItem.job_id == report["job_id"])
        )
    assert stored == report["items"]
    if items is not None:
        assert (report["items"], [e["line"] for e in report["errors"]]) == (items, bad_lines), report
    else:  # broken CSV quotes: whatever the reader makes of it is reported, never a traceback
        assert report["errors"], report


@pytest.mark.parametrize(
    ("content", "filename", "said"),
    [
        ("", "empty.jsonl", "empty"),
        ("   \n\n  ", "blank.jsonl", "empty"),
        ("\n".join(_line(f"k{i}") for i in range(51)), "many.jsonl", "too many items"),
        ("x" * (MAX_UPLOAD + 1), "huge.jsonl", "too large"),
        ("id;question;passage\n1;q;p\n", "semicolons.csv", "header"),
        ("just some words", "notes.txt", "unknown format"),
    ],
)
def test_unusable_batch_files_are_refused_in_one_line_and_nothing_stored(
    ui: UI, content: str, filename: str, said: str
) -> None:
    key = _key()
    assert said in _refused(ui, content, filename, key, api_name="/batch_submit")
    assert _owned(ui, QAJob, key) == 0


# --- owner isolation ---------------------------------------------------------------------------------------


def test_another_owner_key_cannot_read_change_or_export_a_conversation_or_job(ui: UI) -> None:
    owner, intruder = _key(), _key()
    first = ui.predict("hello there", "", owner, api_name="/chat")
    conversation_id = first["conversation_id"]
    job = ui.predict(_line("a") + "\n" + _line("b"), "mine.jsonl", owner, api_name="/batch_submit")
    job_id = job["job_id"]
    before = _turns(ui, owner)

    assert "does not exist" in _refused(ui, "let me in", conversation_id, intruder, api_name="/chat")
    assert "does not exist" in _refused(ui, job_id, intruder, api_name="/batch_status")
    refused_events = {
        "open_conversation": (conversation_id, intruder),
        "rename_conversation": ("pwned", conversation_id, intruder),
        "delete_conversation": (conversation_id, intruder),
        "retry_reply": (conversation_id, intruder, 5, 1.0, 48),
        "cancel_job": (job_id, intruder),
        "export_job": (job_id, intruder),
    }
    if "stop_reply" in ui.fn_index:
        refused_events["stop_reply"] = (conversation_id, intruder)
    refusals = (
        "does not exist",
        "no failed reply",
        "no reply to stop",
        "not in the list of choices",
        "first",
    )
    for name, data in refused_events.items():
        success, output = ui.event(name, *data)
        # Refused as an error, or answered with a notice: for the key (NotFound, worded as for a missing id), for
        # want of a failed reply, by Gradio before our code runs (an id that is not among this session's
        # dropdown choices), or because the open conversation is the session's own server-side state, which a
        # caller cannot set ("Open a conversation first").
        assert any(reason in str(output) for reason in refusals), (name, success, output)

    with transaction(ui.engine) as db:
        conversation = db.get(Conversation, conversation_id)
        assert conversation is not None and conversation.title != "pwned"
        stored_job = db.get(QAJob, job_id)
        assert stored_job is not None and stored_job.status is not JobStatus.CANCELLED
    assert _turns(ui, owner) == before
    assert _owned(ui, Conversation, intruder) == 0 and _owned(ui, QAJob, intruder) == 0

    # The owner's own key still reaches both: the refusals above were about the key, not the calls.
    again = ui.predict("still mine", conversation_id, owner, api_name="/chat")
    assert again["conversation_id"] == conversation_id and again["status"] == "done"
    status = ui.predict(job_id, owner, api_name="/batch_status")
    assert status["job_id"] == job_id


# --- per-owner limits from the settings ----------------------------------------------------------------------


def test_one_owner_key_is_held_to_its_requests_a_minute_and_others_are_not(ui: UI) -> None:
    key, other = _key(), _key()
    sent = [ui.predict(f"message {i}", "", key, api_name="/chat") for i in range(PER_MINUTE)]
    assert all(outcome["status"] == "done" for outcome in sent)
    message = _refused(ui, "one too many", "", key, api_name="/chat")
    assert "too many requests" in message and str(PER_MINUTE) in message
    assert "too many requests" in _refused(ui, PASSAGE, QUESTION, key, api_name="/answer")
    assert (
        len([role for role, _ in _turns(ui, key) if role is Role.USER]) == PER_MINUTE
    )  # nothing more stored
    assert _owned(ui, Question, key) == 0
    assert ui.predict("hello", "", other, api_name="/chat")["status"] == "done"  # another key is not held


@pytest.mark.parametrize(
    ("owner_key", "said"),
    [
        ("k" * 300, "too long"),
        ("abcdefghijklmnop\x00qrstuvwxyz", "NUL"),
        ("short", "session key"),
    ],
)
def test_hostile_owner_keys_are_refused_in_one_line_and_nothing_stored(
    ui: UI, owner_key: str, said: str
) -> None:
    assert said in _refused(ui, "hello", "", owner_key, api_name="/chat")
    with transaction(ui.engine) as db:
        owners = db.scalars(select(Conversation.owner)).all()
    assert not any(owner_key in owner for owner in owners)


def test_a_hostile_file_name_is_stored_as_text_or_refused_never_used_as_a_path(ui: UI) -> None:
    key = _key()
    job = ui.predict(_line("a"), "../../../etc/passwd.jsonl", key, api_name="/batch_submit")
    with transaction(ui.engine) as db:
        stored = db.get(QAJob, job["job_id"])
        assert stored is not None and stored.filename == "../../../etc/passwd.jsonl"
    assert "NUL" in _refused(ui, _line("b"), "x\x00.jsonl", key, api_name="/batch_submit")
    assert _owned(ui, QAJob, key) == 1
