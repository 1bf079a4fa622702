"""jobs.* called directly with the tiny ModelSet and a real SQLite database (no Celery, no Redis)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import redis
from sqlalchemy import Engine, select

from storage import batch_jobs, conversations, questions
from storage.db import transaction
from storage.models import ItemStatus, JobStatus, QAJobItem
from tests.workers.conftest import OWNER, PASSAGE, QUESTION, REPO_ROOT
from workers import jobs
from workers.attempts import RedisAttempts
from workers.jobs import Serving
from workers.runtime import STUCK_EXIT_CODE


def _question(engine: Engine, question: str = QUESTION) -> str:
    with transaction(engine) as db:
        passage_id = questions.upsert_passage(db, text=PASSAGE)
        return questions.create_question(db, owner=OWNER, passage_id=passage_id, question=question).id


def _turn(engine: Engine, text: str = "hello there", decoding: dict[str, object] | None = None) -> int:
    with transaction(engine) as db:
        conversation = conversations.create_conversation(db, owner=OWNER)
        return conversations.add_user_turn(
            db, conversation_id=conversation.id, owner=OWNER, text=text, decoding=decoding
        ).reply_turn_id


def _job(engine: Engine, count: int) -> str:
    items = [{"item_key": f"q{i}", "question": QUESTION, "passage": PASSAGE} for i in range(count)]
    with transaction(engine) as db:
        return batch_jobs.create_job(db, owner=OWNER, filename="x.jsonl", items=items)


def _item_ids(engine: Engine, job_id: str) -> list[int]:
    with transaction(engine) as db:
        return list(
            db.scalars(select(QAJobItem.id).where(QAJobItem.job_id == job_id).order_by(QAJobItem.position))
        )


def test_question_is_answered_with_the_passage_span_and_stored(engine: Engine, serving: Serving) -> None:
    question_id = _question(engine)
    outcome = jobs.answer_question(engine, serving, question_id)
    assert outcome["status"] == "done"
    assert outcome["answer"] == "Oslo"
    assert PASSAGE[slice(*outcome["span"])] == "Oslo"
    with transaction(engine) as db:
        stored = questions.get_question(db, question_id=question_id, owner=OWNER)
        assert stored.answer == "Oslo" and stored.n_best and stored.attention is not None


def test_answering_a_question_twice_stores_it_once(engine: Engine, serving: Serving) -> None:
    question_id = _question(engine)
    first = jobs.answer_question(engine, serving, question_id)
    second = jobs.answer_question(engine, serving, question_id)
    assert first == second


def test_a_reply_stored_and_the_reply_read_back_report_the_same(engine: Engine, serving: Serving) -> None:
    turn_id = _turn(engine)
    fresh = jobs.reply_to_turn(engine, serving, turn_id)
    again = jobs.reply_to_turn(engine, serving, turn_id)  # not pending any more: read from storage
    assert fresh == again


def test_a_reply_or_question_the_user_stopped_is_skipped_without_a_decode(
    engine: Engine, serving: Serving
) -> None:
    turn_id, question_id = _turn(engine), _question(engine)
    with transaction(engine) as db:
        conversation_id = conversations.get_turn(db, turn_id=turn_id, owner=OWNER).conversation_id
        conversations.cancel_pending_replies(db, conversation_id=conversation_id, owner=OWNER)
        questions.cancel_question(db, question_id=question_id, owner=OWNER)

    class NoDecode:
        def answer(self, *args: object, **kwargs: object) -> list[list[object]]:
            raise AssertionError("a stopped question was decoded")

        def reply(self, *args: object, **kwargs: object) -> list[list[object]]:
            raise AssertionError("a stopped reply was decoded")

    untouched = dataclasses.replace(serving, decoder=NoDecode())
    assert jobs.reply_to_turn(engine, untouched, turn_id)["status"] == "cancelled"
    assert jobs.answer_question(engine, untouched, question_id)["status"] == "cancelled"


def test_an_answer_stored_by_a_racing_delivery_is_what_the_late_one_reports(
    engine: Engine, serving: Serving
) -> None:
    question_id = _question(engine)

    class RacedDecoder:
        """Decodes, but another delivery of the same question stores its answer first."""

        def answer(self, pairs: list[tuple[str, str]], decode: object = None) -> list[list[object]]:
            with transaction(engine) as db:
                questions.save_answer(
                    db, question_id=question_id, answer="Paris", score=-1.0, model_version="racer"
                )
            return serving.decoder.answer(pairs, decode)

        def reply(self, histories: list[list[str]], decode: object = None) -> list[list[object]]:
            raise AssertionError("not a chat request")

    raced = dataclasses.replace(serving, decoder=RacedDecoder())
    outcome = jobs.answer_question(engine, raced, question_id)
    assert (outcome["answer"], outcome["model_version"]) == ("Paris", "racer")


def _cut_short(serving: Serving, key: str, times: int) -> None:
    """As if `times` decodes of the request named `key` had each ended with their worker's death."""
    for _ in range(times):
        serving.attempts.started([key])


class CallLog:
    """A decoder that records the questions of each model call it makes."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.calls: list[list[str]] = []

    def answer(self, questions: list[tuple[str, str]], decode: object = None) -> list[list[object]]:
        self.calls.append([question for question, _ in questions])
        return self.model.answer(questions, decode)  # type: ignore[attr-defined]

    def reply(self, histories: list[list[str]], decode: object = None) -> list[list[object]]:
        self.calls.append([history[-1] for history in histories])
        return self.model.reply(histories, decode)  # type: ignore[attr-defined]


def test_a_question_whose_decode_killed_its_worker_too_often_is_failed_not_decoded(
    engine: Engine, serving: Serving
) -> None:
    question_id = _question(engine)
    _cut_short(serving, f"question:{question_id}", serving.max_attempts)
    outcome = jobs.answer_question(engine, serving, question_id)
    assert outcome["status"] == "failed"
    assert outcome["error"] == f"gave up after {serving.max_attempts} decodes of it stopped its worker"


def test_a_turn_cut_short_fewer_times_is_decoded_and_that_decode_adds_nothing(
    engine: Engine, serving: Serving
) -> None:
    turn_id = _turn(engine)
    _cut_short(serving, f"turn:{turn_id}", serving.max_attempts - 1)
    assert jobs.reply_to_turn(engine, serving, turn_id)["status"] == "done"
    assert serving.attempts.interrupted([f"turn:{turn_id}"]) == {f"turn:{turn_id}": serving.max_attempts - 1}


def test_requests_are_answered_when_the_poison_guards_record_cannot_be_read(
    engine: Engine, serving: Serving
) -> None:
    """Redis not answering (nothing listens on the record's port) costs the guard, not the requests."""
    from supervisor.embedded_redis import free_port

    unreachable = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    serving = dataclasses.replace(serving, attempts=RedisAttempts(unreachable))
    job_id = _job(engine, 2)
    assert jobs.reply_to_turn(engine, serving, _turn(engine))["status"] == "done"
    assert jobs.answer_question(engine, serving, _question(engine))["status"] == "done"
    assert jobs.answer_items(engine, serving, job_id, _item_ids(engine, job_id))["answered"] == 2


def test_a_finished_decode_leaves_no_count_behind(engine: Engine, serving: Serving) -> None:
    job_id = _job(engine, 3)
    item_ids = _item_ids(engine, job_id)
    question_id = _question(engine)
    jobs.answer_items(engine, serving, job_id, item_ids)
    jobs.answer_question(engine, serving, question_id)
    keys = [f"item:{item_id}" for item_id in item_ids] + [f"question:{question_id}"]
    assert serving.attempts.interrupted(keys) == {}


def test_chat_turn_gets_a_stored_reply(engine: Engine, serving: Serving) -> None:
    turn_id = _turn(engine)
    outcome = jobs.reply_to_turn(engine, serving, turn_id)
    assert outcome["status"] == "done"
    assert outcome["text"]
    assert outcome["model_version"].startswith("tiny-model@")
    with transaction(engine) as db:
        assert conversations.turn_status(db, turn_id=turn_id).value == "done"


def test_chat_turn_is_decoded_with_the_settings_the_user_asked_for(engine: Engine, serving: Serving) -> None:
    turn_id = _turn(engine, decoding={"beam_size": 2, "max_length": 3})
    assert jobs.reply_to_turn(engine, serving, turn_id)["status"] == "done"
    with transaction(engine) as db:
        stored = conversations.get_turn(db, turn_id=turn_id, owner=OWNER)
        assert stored.decoding is not None
        assert (stored.decoding["beam_size"], stored.decoding["max_length"]) == (2, 3)
        assert len(serving.model.routes["*"].tokenizer.encode(stored.text or "").ids) <= 3


def test_without_overrides_answers_record_the_models_own_decoding(engine: Engine, serving: Serving) -> None:
    assert serving.rc_decode is None and serving.chat_decode is None  # no S2S_BEAM_SIZE etc. in the tests
    question_id = _question(engine)
    turn_id = _turn(engine)
    jobs.answer_question(engine, serving, question_id)
    jobs.reply_to_turn(engine, serving, turn_id)
    model_defaults = serving.model.routes["*"].default_decode.to_dict()
    with transaction(engine) as db:
        assert questions.get_question(db, question_id=question_id, owner=OWNER).decoding == model_defaults
        assert conversations.get_turn(db, turn_id=turn_id, owner=OWNER).decoding == model_defaults


def test_only_decoding_settings_the_operator_set_override_the_models_defaults(monkeypatch) -> None:
    from settings import Settings
    from workers.runtime import decode_overrides

    for name in ("S2S_BEAM_SIZE", "S2S_N_BEST", "S2S_MAX_OUTPUT_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    assert decode_overrides(Settings()) == {}
    monkeypatch.setenv("S2S_BEAM_SIZE", "7")
    monkeypatch.setenv("S2S_MAX_OUTPUT_TOKENS", "20")
    assert decode_overrides(Settings()) == {"beam_size": 7, "max_length": 20}


def test_chat_turn_with_unusable_settings_fails_with_the_reason(engine: Engine, serving: Serving) -> None:
    turn_id = _turn(engine, decoding={"beam_size": 999})
    outcome = jobs.reply_to_turn(engine, serving, turn_id)
    assert outcome["status"] == "failed"
    assert "beam_size" in outcome["error"]


def test_batch_items_are_answered_and_the_job_finishes(engine: Engine, serving: Serving) -> None:
    job_id = _job(engine, 5)
    chunks = jobs.plan_job(engine, job_id, chunk_size=2)
    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    for chunk in chunks:
        jobs.answer_items(engine, serving, job_id, chunk)
    with transaction(engine) as db:
        progress = batch_jobs.job_progress(db, job_id=job_id, owner=OWNER)
        rows = batch_jobs.export_results(db, job_id=job_id, owner=OWNER)
    assert progress.status is JobStatus.DONE and progress.done == 5
    assert {row["answer"] for row in rows} == {"Oslo"}


def test_a_redelivered_chunk_changes_nothing(engine: Engine, serving: Serving) -> None:
    job_id = _job(engine, 3)
    item_ids = _item_ids(engine, job_id)
    assert jobs.answer_items(engine, serving, job_id, item_ids)["answered"] == 3
    assert jobs.answer_items(engine, serving, job_id, item_ids) == {"answered": 0, "failed": 0, "skipped": 3}


def test_a_cancelled_job_decodes_no_more_items(engine: Engine, serving: Serving) -> None:
    job_id = _job(engine, 4)
    item_ids = _item_ids(engine, job_id)
    jobs.answer_items(engine, serving, job_id, item_ids[:2])
    with transaction(engine) as db:
        assert batch_jobs.cancel_job(db, job_id=job_id, owner=OWNER)
    assert jobs.answer_items(engine, serving, job_id, item_ids[2:]) == {
        "answered": 0,
        "failed": 0,
        "skipped": 2,
    }
    with transaction(engine) as db:
        statuses = [row["status"] for row in batch_jobs.export_results(db, job_id=job_id, owner=OWNER)]
    assert statuses == ["done", "done", "cancelled", "cancelled"]


def test_items_whose_decode_killed_the_worker_too_often_fail_and_the_job_still_ends(
    engine: Engine, serving: Serving
) -> None:
    job_id = _job(engine, 2)
    item_ids = _item_ids(engine, job_id)
    for item_id in item_ids:
        _cut_short(serving, f"item:{item_id}", serving.max_attempts)
    outcome = jobs.answer_items(engine, serving, job_id, item_ids)
    assert outcome["failed"] == 2
    with transaction(engine) as db:
        progress = batch_jobs.job_progress(db, job_id=job_id, owner=OWNER)
        items = list(db.scalars(select(QAJobItem.status)))
    assert progress.status is JobStatus.DONE
    assert items == [ItemStatus.FAILED, ItemStatus.FAILED]


def test_items_cut_short_before_are_decoded_each_alone_and_the_rest_together(
    engine: Engine, serving: Serving
) -> None:
    job_id = _job(engine, 5)
    item_ids = _item_ids(engine, job_id)
    with transaction(engine) as db:  # tell the items apart in the model calls
        for index, item_id in enumerate(item_ids):
            db.execute(
                QAJobItem.__table__.update()
                .where(QAJobItem.id == item_id)
                .values(question=f"{QUESTION} {index}")
            )
    _cut_short(serving, f"item:{item_ids[1]}", 1)
    _cut_short(serving, f"item:{item_ids[3]}", serving.max_attempts - 1)
    calls = CallLog(serving.model)
    outcome = jobs.answer_items(engine, dataclasses.replace(serving, batch_decoder=calls), job_id, item_ids)
    assert outcome == {"answered": 5, "failed": 0, "skipped": 0}
    assert calls.calls == [[f"{QUESTION} {i}" for i in (0, 2, 4)], [f"{QUESTION} 1"], [f"{QUESTION} 3"]]


def test_one_failing_request_does_not_fail_its_batch() -> None:
    def call(requests: list[int]) -> list[int]:
        if 0 in requests:
            raise ValueError("zero")
        return [10 * r for r in requests]

    results = jobs.decode_each(call, [1, 0, 2])
    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError)


def test_a_stuck_worker_exits_with_its_own_status_and_says_why() -> None:
    code = (
        "import logging; logging.basicConfig(); from workers.runtime import exit_stuck_worker; "
        "exit_stuck_worker(312.0); print('not reached')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == STUCK_EXIT_CODE
    assert "a decode has run for 312 s, past S2S_TASK_TIME_LIMIT_S" in done.stderr
    assert "not reached" not in done.stdout


def test_a_span_reader_answers_through_the_job_and_its_pointer_is_stored(engine: Engine, tmp_path) -> None:
    """A ModelSet routing RC to a (random, tiny) span reader: the worker's job stores a passage span, the two
    pointer distributions as the attention record, and the pointer's question alignment."""
    from model.inference import ModelSet
    from model.span.checkpoint import save_reader
    from tests.model.test_span_reader import tiny_predictor

    reader = tiny_predictor()
    save_reader(tmp_path / "rc", reader.model, reader.vocab, step=1, decode=reader.default_decode, meta={})
    models = ModelSet.load(tmp_path / "rc", device="cpu")
    serving = Serving(model=models, decoder=models, batch_decoder=models, max_attempts=3)
    question_id = _question(engine)
    outcome = jobs.answer_question(engine, serving, question_id)
    assert outcome["status"] == "done" and outcome["model_version"].startswith("rc@")
    assert PASSAGE[slice(*outcome["span"])] == outcome["answer"]
    with transaction(engine) as db:
        stored = questions.get_question(db, question_id=question_id, owner=OWNER)
        record = stored.attention
        assert record is not None and len(record["attention"]) == 2 == len(record["output_tokens"])
        assert record["pointer"]["question_tokens"] == QUESTION.rstrip("?").split() + ["?"]
