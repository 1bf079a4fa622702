"""Passages stored once by hash, and questions asked one at a time."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import questions
from storage.errors import EmptyInput, InputTooLong, NotFound
from storage.limits import Limits
from storage.models import Passage, QuestionStatus
from tests.storage.conftest import OTHER_OWNER, OWNER

PASSAGE = "The Eiffel Tower is in Paris. It was finished in 1889."


def _question_id(db: Session, limits: Limits, owner: str = OWNER) -> str:
    passage_id = questions.upsert_passage(db, text=PASSAGE, limits=limits)
    return questions.create_question(
        db, owner=owner, passage_id=passage_id, question="Where is it?", limits=limits
    ).id


def test_the_same_passage_text_is_stored_once_under_its_sha256(db: Session, limits: Limits) -> None:
    first = questions.upsert_passage(db, text=PASSAGE, limits=limits)
    second = questions.upsert_passage(db, text=PASSAGE, limits=limits)
    other = questions.upsert_passage(db, text=PASSAGE + " ", limits=limits)
    stored = db.get(Passage, first)
    assert first == second != other
    assert stored is not None and stored.sha256 == hashlib.sha256(PASSAGE.encode()).hexdigest()
    assert db.scalar(select(func.count()).select_from(Passage).where(Passage.id.in_([first, other]))) == 2


def test_the_database_refuses_two_passages_with_one_hash(db: Session, limits: Limits) -> None:
    questions.upsert_passage(db, text=PASSAGE, limits=limits)
    with pytest.raises(IntegrityError), db.begin_nested():
        db.add(Passage(sha256=questions.passage_hash(PASSAGE), text=PASSAGE))


def test_a_passage_over_the_limit_is_rejected_not_truncated(db: Session, limits: Limits) -> None:
    with pytest.raises(InputTooLong) as error:
        questions.upsert_passage(db, text="p" * 201, limits=limits)
    assert (error.value.field, error.value.limit, error.value.length) == ("passage", 200, 201)
    assert db.scalar(select(Passage.id).where(Passage.sha256 == questions.passage_hash("p" * 201))) is None


def test_a_blank_passage_is_rejected(db: Session, limits: Limits) -> None:
    with pytest.raises(EmptyInput):
        questions.upsert_passage(db, text=" \n", limits=limits)


def test_a_new_question_is_pending_and_readable_by_its_owner(db: Session, limits: Limits) -> None:
    question = questions.get_question(db, question_id=_question_id(db, limits), owner=OWNER)
    assert (question.status, question.question, question.answer) == (
        QuestionStatus.PENDING,
        "Where is it?",
        None,
    )
    assert question.passage.text == PASSAGE and len(question.id) == 32


def test_another_owner_cannot_read_a_question(db: Session, limits: Limits) -> None:
    question_id = _question_id(db, limits)
    with pytest.raises(NotFound):
        questions.get_question(db, question_id=question_id, owner=OTHER_OWNER)


def test_a_question_over_the_limit_or_blank_is_rejected(db: Session, limits: Limits) -> None:
    passage_id = questions.upsert_passage(db, text=PASSAGE, limits=limits)
    with pytest.raises(InputTooLong) as error:
        questions.create_question(db, owner=OWNER, passage_id=passage_id, question="q" * 41, limits=limits)
    with pytest.raises(EmptyInput):
        questions.create_question(db, owner=OWNER, passage_id=passage_id, question="  ", limits=limits)
    assert (error.value.field, error.value.limit, error.value.length) == ("question", 40, 41)


def test_a_question_about_an_unknown_passage_is_not_found(db: Session, limits: Limits) -> None:
    with pytest.raises(NotFound):
        questions.create_question(db, owner=OWNER, passage_id=10**9, question="Where?", limits=limits)


def test_question_input_gives_the_worker_the_text_until_the_question_is_answered(
    db: Session, limits: Limits
) -> None:
    question_id = _question_id(db, limits)
    before = questions.question_input(db, question_id=question_id)
    questions.save_answer(db, question_id=question_id, answer="Paris", score=-0.1, model_version="rc-en@1")
    assert before == questions.QAInput(question="Where is it?", passage=PASSAGE)
    assert questions.question_input(db, question_id=question_id) is None
    with pytest.raises(NotFound):
        questions.question_input(db, question_id="f" * 32)


def test_save_answer_stores_the_answer_and_its_attention_once(db: Session, limits: Limits) -> None:
    question_id = _question_id(db, limits)
    attention = {
        "source_tokens": ["▁The", "▁Eiffel", "▁Paris"],
        "output_tokens": ["▁Paris"],
        "attention": [[0.1, 0.2, 0.7]],
        "p_gen": [0.05],
        "span": [22, 27],
    }
    n_best = [{"text": "Paris", "score": -0.1}, {"text": "in Paris", "score": -0.9}]
    first = questions.save_answer(
        db,
        question_id=question_id,
        answer="Paris",
        score=-0.1,
        model_version="rc-en@1",
        n_best=n_best,
        attention=attention,
        decoding={"beam_size": 5},
        latency_ms=30.0,
    )
    again = questions.save_answer(
        db, question_id=question_id, answer="London", score=-5.0, model_version="rc-en@2"
    )
    db.expire_all()
    question = questions.get_question(db, question_id=question_id, owner=OWNER)
    assert (first, again) == (True, False)
    assert (question.status, question.answer, question.score) == (QuestionStatus.DONE, "Paris", -0.1)
    assert question.attention == attention and question.n_best == n_best
    assert (question.model_version, question.decoding, question.latency_ms) == (
        "rc-en@1",
        {"beam_size": 5},
        30.0,
    )


def test_fail_question_marks_a_pending_question_failed_and_keeps_it_failed(
    db: Session, limits: Limits
) -> None:
    question_id = _question_id(db, limits)
    assert questions.fail_question(db, question_id=question_id, error="passage too long for the model")
    assert not questions.save_answer(
        db, question_id=question_id, answer="late", score=0.0, model_version="rc-en@1"
    )
    assert not questions.fail_question(db, question_id=question_id, error="again")
    question = questions.get_question(db, question_id=question_id, owner=OWNER)
    assert (question.status, question.error, question.answer) == (
        QuestionStatus.FAILED,
        "passage too long for the model",
        None,
    )


def test_cancel_question_stops_a_pending_question_and_a_worker_then_skips_it(
    db: Session, limits: Limits
) -> None:
    question_id = _question_id(db, limits)
    with pytest.raises(NotFound):
        questions.cancel_question(db, question_id=question_id, owner=OTHER_OWNER)
    assert questions.cancel_question(db, question_id=question_id, owner=OWNER)
    assert not questions.cancel_question(db, question_id=question_id, owner=OWNER)
    assert questions.question_input(db, question_id=question_id) is None  # what a worker reads: nothing to do
    assert not questions.save_answer(
        db, question_id=question_id, answer="late", score=0.0, model_version="rc-en@1"
    )
    question = questions.get_question(db, question_id=question_id, owner=OWNER)
    assert (question.status, question.answer) == (QuestionStatus.CANCELLED, None)
