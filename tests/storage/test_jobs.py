"""Batch QA jobs: bulk creation, starting, idempotent answers, cancel, progress and export."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import batch_jobs, questions
from storage.errors import DuplicateKey, EmptyInput, InputTooLong, NotFound
from storage.limits import Limits
from storage.models import ItemStatus, JobStatus, Passage, QAJob, QAJobItem, utcnow
from tests.storage.conftest import OTHER_OWNER, OWNER

PARIS = "The Eiffel Tower is in Paris."
ROME = "The Colosseum is in Rome."


def _items(count: int = 3) -> list[dict[str, str]]:
    passages = [PARIS, ROME]
    return [
        {"item_key": f"q{index}", "question": f"Question {index}?", "passage": passages[index % 2]}
        for index in range(count)
    ]


def _job_id(db: Session, limits: Limits, count: int = 3, owner: str = OWNER) -> str:
    return batch_jobs.create_job(
        db, owner=owner, filename="questions.jsonl", items=_items(count), limits=limits
    )


def _item_ids(db: Session, job_id: str) -> list[int]:
    return list(
        db.scalars(select(QAJobItem.id).where(QAJobItem.job_id == job_id).order_by(QAJobItem.position))
    )


def _answer(db: Session, item_id: int, answer: str = "Paris") -> bool:
    return batch_jobs.record_item_answer(
        db, item_id=item_id, answer=answer, score=-0.5, model_version="rc-en@1"
    )


def test_create_job_stores_every_item_pending_and_each_passage_once(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits, count=4)
    job = batch_jobs.get_job(db, job_id=job_id, owner=OWNER)
    items = job.items
    passage_ids = {item.passage_id for item in items}
    assert (job.status, job.total_items, job.filename) == (JobStatus.QUEUED, 4, "questions.jsonl")
    assert [item.item_key for item in items] == ["q0", "q1", "q2", "q3"]
    assert {item.status for item in items} == {ItemStatus.PENDING} and len(passage_ids) == 2
    assert {db.get_one(Passage, passage_id).text for passage_id in passage_ids} == {PARIS, ROME}


def test_create_job_reuses_passages_already_stored(db: Session, limits: Limits) -> None:
    paris_id = questions.upsert_passage(db, text=PARIS, limits=limits)
    job_id = _job_id(db, limits, count=1)
    assert batch_jobs.get_job(db, job_id=job_id, owner=OWNER).items[0].passage_id == paris_id


def test_create_job_keeps_the_lines_the_parser_rejected(db: Session, limits: Limits) -> None:
    errors = [{"line": 4, "reason": "missing question"}, {"line": 9, "reason": "not JSON"}]
    job_id = batch_jobs.create_job(
        db, owner=OWNER, filename="f.jsonl", items=_items(1), errors=errors, limits=limits
    )
    assert batch_jobs.get_job(db, job_id=job_id, owner=OWNER).parse_errors == errors


def test_a_job_without_valid_items_is_stored_failed_with_its_errors(db: Session, limits: Limits) -> None:
    errors = [{"line": 1, "reason": "not JSON"}]
    job_id = batch_jobs.create_job(
        db, owner=OWNER, filename="bad.jsonl", items=[], errors=errors, limits=limits
    )
    job = batch_jobs.get_job(db, job_id=job_id, owner=OWNER)
    assert (job.status, job.total_items, job.parse_errors) == (JobStatus.FAILED, 0, errors)
    assert job.error and job.finished_at is not None


def test_a_repeated_item_key_is_rejected_before_anything_is_stored(db: Session, limits: Limits) -> None:
    items = [*_items(2), {"item_key": "q0", "question": "Again?", "passage": PARIS}]
    jobs_before = db.scalar(select(func.count()).select_from(QAJob))
    with pytest.raises(DuplicateKey) as error:
        batch_jobs.create_job(db, owner=OWNER, filename="f.jsonl", items=items, limits=limits)
    assert error.value.key == "q0"
    assert db.scalar(select(func.count()).select_from(QAJob)) == jobs_before


def test_an_overlong_or_blank_item_is_rejected_with_its_key(db: Session, limits: Limits) -> None:
    long_question = [{"item_key": "long", "question": "q" * 41, "passage": PARIS}]
    blank_passage = [{"item_key": "blank", "question": "Where?", "passage": "  "}]
    with pytest.raises(InputTooLong) as too_long:
        batch_jobs.create_job(db, owner=OWNER, filename="f.jsonl", items=long_question, limits=limits)
    with pytest.raises(EmptyInput) as empty:
        batch_jobs.create_job(db, owner=OWNER, filename="f.jsonl", items=blank_passage, limits=limits)
    assert "'long'" in too_long.value.field and (too_long.value.limit, too_long.value.length) == (40, 41)
    assert "'blank'" in empty.value.field


def test_more_items_than_the_batch_limit_are_rejected(db: Session, limits: Limits) -> None:
    with pytest.raises(InputTooLong) as error:
        _job_id(db, limits, count=6)
    assert (error.value.field, error.value.limit, error.value.length) == ("items", 5, 6)


def test_the_database_refuses_two_items_with_one_key_in_a_job(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits, count=1)
    passage_id = questions.upsert_passage(db, text=PARIS, limits=limits)
    with pytest.raises(IntegrityError), db.begin_nested():
        db.add(
            QAJobItem(
                job_id=job_id,
                position=5,
                item_key="q0",
                question="Again?",
                passage_id=passage_id,
                status=ItemStatus.PENDING,
            )
        )


def test_another_owner_cannot_see_cancel_or_export_a_job(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits)
    for action in (
        batch_jobs.get_job,
        batch_jobs.job_progress,
        batch_jobs.cancel_job,
        batch_jobs.export_results,
    ):
        with pytest.raises(NotFound):
            action(db, job_id=job_id, owner=OTHER_OWNER)
    assert batch_jobs.get_job(db, job_id=job_id, owner=OWNER).status is JobStatus.QUEUED
    assert batch_jobs.list_jobs(db, owner=OTHER_OWNER) == []


def test_list_jobs_shows_the_owners_jobs_newest_first(db: Session, limits: Limits) -> None:
    older = _job_id(db, limits)
    newer = _job_id(db, limits)
    _job_id(db, limits, owner=OTHER_OWNER)
    db.get_one(QAJob, older).created_at = utcnow() - timedelta(minutes=1)
    db.flush()
    assert [job.id for job in batch_jobs.list_jobs(db, owner=OWNER)] == [newer, older]


def test_start_job_marks_a_queued_job_running_once(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits)
    assert batch_jobs.job_status(db, job_id=job_id) is JobStatus.QUEUED
    started, again = batch_jobs.start_job(db, job_id=job_id), batch_jobs.start_job(db, job_id=job_id)
    job = batch_jobs.get_job(db, job_id=job_id, owner=OWNER)
    db.refresh(job)
    assert (started, again) == (True, False)
    assert job.status is JobStatus.RUNNING and job.started_at is not None
    assert batch_jobs.active_job_ids(db) == [job_id]


def test_pending_item_ids_exclude_answered_ones_and_keep_file_order(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits)
    first_id, *rest = _item_ids(db, job_id)
    _answer(db, first_id)
    assert batch_jobs.pending_item_ids(db, job_id=job_id) == rest


def test_pending_item_gives_one_items_input_until_it_is_answered(db: Session, limits: Limits) -> None:
    item_id = _item_ids(db, _job_id(db, limits))[1]
    before = batch_jobs.pending_item(db, item_id=item_id)
    _answer(db, item_id)
    assert before == batch_jobs.ItemInput(
        item_id=item_id, item_key="q1", question="Question 1?", passage=ROME
    )
    assert batch_jobs.pending_item(db, item_id=item_id) is None


def test_record_item_answer_writes_once_and_a_redelivered_answer_changes_nothing(
    db: Session, limits: Limits
) -> None:
    item_id = _item_ids(db, _job_id(db, limits))[0]
    first = _answer(db, item_id, "Paris")
    second = _answer(db, item_id, "London")
    failure = batch_jobs.record_item_failure(db, item_id=item_id, error="late failure")
    item = db.get_one(QAJobItem, item_id)
    db.refresh(item)
    assert (first, second, failure) == (True, False, False)
    assert (item.status, item.answer, item.score, item.error) == (ItemStatus.DONE, "Paris", -0.5, None)


def test_record_item_failure_marks_only_a_pending_item_failed(db: Session, limits: Limits) -> None:
    item_id = _item_ids(db, _job_id(db, limits))[0]
    assert batch_jobs.record_item_failure(db, item_id=item_id, error="input too long for the model")
    assert not _answer(db, item_id)
    item = db.get_one(QAJobItem, item_id)
    db.refresh(item)
    assert (item.status, item.answer, item.error) == (ItemStatus.FAILED, None, "input too long for the model")


def test_finish_job_if_complete_waits_for_the_last_pending_item(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits)
    first, second, third = _item_ids(db, job_id)
    batch_jobs.start_job(db, job_id=job_id)
    _answer(db, first)
    batch_jobs.record_item_failure(db, item_id=second, error="boom")
    not_yet = batch_jobs.finish_job_if_complete(db, job_id=job_id)
    _answer(db, third)
    finished = batch_jobs.finish_job_if_complete(db, job_id=job_id)
    repeated = batch_jobs.finish_job_if_complete(db, job_id=job_id)
    job = batch_jobs.get_job(db, job_id=job_id, owner=OWNER)
    assert (not_yet, finished, repeated) == (False, True, False)
    assert job.status is JobStatus.DONE and job.finished_at is not None


def test_cancel_job_cancels_pending_items_and_keeps_answered_ones(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits)
    first, second, _ = _item_ids(db, job_id)
    batch_jobs.start_job(db, job_id=job_id)
    _answer(db, first)
    cancelled = batch_jobs.cancel_job(db, job_id=job_id, owner=OWNER)
    late_answer = _answer(db, second)
    assert (cancelled, late_answer) == (True, False)
    assert [row["status"] for row in batch_jobs.export_results(db, job_id=job_id, owner=OWNER)] == [
        "done",
        "cancelled",
        "cancelled",
    ]
    assert batch_jobs.get_job(db, job_id=job_id, owner=OWNER).status is JobStatus.CANCELLED


def test_a_cancelled_job_is_not_started_finished_or_cancelled_again(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits)
    batch_jobs.cancel_job(db, job_id=job_id, owner=OWNER)
    assert not batch_jobs.start_job(db, job_id=job_id)
    assert batch_jobs.pending_item_ids(db, job_id=job_id) == []
    assert not batch_jobs.finish_job_if_complete(db, job_id=job_id)
    assert not batch_jobs.cancel_job(db, job_id=job_id, owner=OWNER)
    assert batch_jobs.get_job(db, job_id=job_id, owner=OWNER).status is JobStatus.CANCELLED


def test_fail_job_fails_the_job_and_its_pending_items(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits)
    _answer(db, _item_ids(db, job_id)[0])
    assert batch_jobs.fail_job(db, job_id=job_id, error="no model for zh")
    rows = batch_jobs.export_results(db, job_id=job_id, owner=OWNER)
    job = batch_jobs.get_job(db, job_id=job_id, owner=OWNER)
    assert [(row["status"], row["error"]) for row in rows] == [
        ("done", None),
        ("failed", "no model for zh"),
        ("failed", "no model for zh"),
    ]
    assert (job.status, job.error) == (JobStatus.FAILED, "no model for zh")


def _finish_at(db: Session, item_ids: list[int], seconds_ago: float) -> None:
    """Answer the items as if a worker had done so `seconds_ago` seconds ago."""
    for item_id in item_ids:
        _answer(db, item_id)
        db.get_one(QAJobItem, item_id).finished_at = utcnow() - timedelta(seconds=seconds_ago)
    db.flush()


def test_job_progress_counts_items_and_estimates_the_time_left_from_the_rate_after_the_first_burst(
    db: Session, limits: Limits
) -> None:
    job_id = _job_id(db, dataclasses.replace(limits, max_batch_items=40), count=40)
    item_ids = _item_ids(db, job_id)
    batch_jobs.start_job(db, job_id=job_id)
    db.get_one(QAJob, job_id).started_at = utcnow() - timedelta(seconds=100)
    _finish_at(db, item_ids[:8], seconds_ago=60)  # the first chunk, after 40 s of queue wait and warm-up
    first = batch_jobs.job_progress(db, job_id=job_id, owner=OWNER)
    _finish_at(db, item_ids[8:16], seconds_ago=40)
    _finish_at(db, item_ids[16:23], seconds_ago=20)
    batch_jobs.record_item_failure(db, item_id=item_ids[23], error="boom")
    db.get_one(QAJobItem, item_ids[23]).finished_at = utcnow() - timedelta(seconds=20)
    db.flush()
    progress = batch_jobs.job_progress(db, job_id=job_id, owner=OWNER)
    # counted from the start, the first chunk would promise 32 * 100 / 8 = 400 s: no ETA until a rate is known
    assert first.eta_s is None
    assert (progress.total, progress.done, progress.failed, progress.pending, progress.cancelled) == (
        40,
        23,
        1,
        16,
        0,
    )
    assert progress.status is JobStatus.RUNNING and progress.fraction == pytest.approx(0.6)
    # 16 items in the 40 s after the first chunk: 2.5 s each, so the 16 pending ones need about 40 s
    assert progress.eta_s == pytest.approx(40.0, abs=0.5)


def test_job_progress_has_no_eta_before_the_first_item_or_after_the_end(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits, count=2)
    queued = batch_jobs.job_progress(db, job_id=job_id, owner=OWNER)
    batch_jobs.start_job(db, job_id=job_id)
    running = batch_jobs.job_progress(db, job_id=job_id, owner=OWNER)
    batch_jobs.cancel_job(db, job_id=job_id, owner=OWNER)
    cancelled = batch_jobs.job_progress(db, job_id=job_id, owner=OWNER)
    assert (queued.status, queued.fraction, queued.eta_s) == (JobStatus.QUEUED, 0.0, None)
    assert (running.status, running.eta_s) == (JobStatus.RUNNING, None)
    assert (cancelled.status, cancelled.cancelled, cancelled.fraction, cancelled.eta_s) == (
        JobStatus.CANCELLED,
        2,
        1.0,
        None,
    )


def test_export_results_lists_every_item_in_file_order_with_the_input_ids(
    db: Session, limits: Limits
) -> None:
    job_id = _job_id(db, limits)
    first, second, _ = _item_ids(db, job_id)
    _answer(db, first, "Paris")
    batch_jobs.record_item_failure(db, item_id=second, error="boom")
    assert batch_jobs.export_results(db, job_id=job_id, owner=OWNER) == [
        {
            "id": "q0",
            "question": "Question 0?",
            "answer": "Paris",
            "score": -0.5,
            "status": "done",
            "error": None,
        },
        {
            "id": "q1",
            "question": "Question 1?",
            "answer": None,
            "score": None,
            "status": "failed",
            "error": "boom",
        },
        {
            "id": "q2",
            "question": "Question 2?",
            "answer": None,
            "score": None,
            "status": "pending",
            "error": None,
        },
    ]


def test_worker_functions_on_an_unknown_job_raise_not_found(db: Session) -> None:
    with pytest.raises(NotFound):
        batch_jobs.job_status(db, job_id="0" * 32)
    with pytest.raises(NotFound):
        batch_jobs.finish_job_if_complete(db, job_id="0" * 32)
    with pytest.raises(NotFound):
        batch_jobs.pending_item(db, item_id=10**9)


def test_failed_items_lists_only_the_failed_ones_in_file_order(db: Session, limits: Limits) -> None:
    job_id = _job_id(db, limits)
    first, second, third = _item_ids(db, job_id)
    batch_jobs.record_item_failure(db, item_id=third, error="late")
    _answer(db, second)
    batch_jobs.record_item_failure(db, item_id=first, error="boom")
    assert batch_jobs.failed_items(db, job_id=job_id, owner=OWNER) == [
        {"id": "q0", "error": "boom"},
        {"id": "q2", "error": "late"},
    ]
    with pytest.raises(NotFound):
        batch_jobs.failed_items(db, job_id=job_id, owner=OTHER_OWNER)


def test_jobs_with_progress_counts_every_listed_job_as_job_progress_does(db: Session, limits: Limits) -> None:
    first, second = _job_id(db, limits), _job_id(db, limits, count=2)
    _answer(db, _item_ids(db, first)[0])
    batch_jobs.record_item_failure(db, item_id=_item_ids(db, second)[1], error="boom")
    listed = batch_jobs.jobs_with_progress(db, owner=OWNER)
    assert {job.id for job, _ in listed} == {first, second}
    for job, progress in listed:
        assert progress == batch_jobs.job_progress(db, job_id=job.id, owner=OWNER)
    assert batch_jobs.jobs_with_progress(db, owner=OTHER_OWNER) == []


def test_failed_items_by_job_gives_each_of_the_owners_jobs_its_failed_items(
    db: Session, limits: Limits
) -> None:
    first, second = _job_id(db, limits), _job_id(db, limits)
    batch_jobs.record_item_failure(db, item_id=_item_ids(db, second)[2], error="boom")
    found = batch_jobs.failed_items_by_job(db, owner=OWNER, job_ids=[first, second])
    assert found == {second: [{"id": "q2", "error": "boom"}]}
    assert batch_jobs.failed_items_by_job(db, owner=OTHER_OWNER, job_ids=[first, second]) == {}
