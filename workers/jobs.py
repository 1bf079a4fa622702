"""The real work, as plain functions: answer a chat turn, a question, or a chunk of batch items.

Each function takes the engine, a `Serving` (the model, what decodes with it, and the decoding settings) and
ids, and returns a JSON-safe outcome for whoever waits on the task. It opens short transactions around the
decode instead of one around everything: SQLite's write lock (BEGIN IMMEDIATE) would otherwise serialise
every request for the length of a beam search. Every write goes through storage's guarded functions, which
change only rows still pending, so a redelivered task re-decodes at worst and never stores twice.

The poison guard counts decodes, not deliveries (workers/attempts.py): a request whose model call was cut short
by its worker's death `max_attempts` times is failed instead of decoded again, and one cut short at least once
is decoded in a model call of its own, so that it cannot take the requests batched with it down again. A request
that only waited while its worker died costs nothing. No Celery here: tests call these with a ModelSet and a
SQLite file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from model.language import detect_language
from storage import batch_jobs, conversations, questions
from storage.db import transaction
from storage.models import QuestionStatus, TurnStatus
from workers.attempts import AttemptLog, LocalAttempts, request_key
from workers.microbatch import Decoder, TrackedDecoder, Unbatched

logger = logging.getLogger(__name__)

GAVE_UP = "gave up after {attempts} decodes of it stopped its worker"


@dataclass(frozen=True)
class Serving:
    """What jobs decode with. `decoder` is the ModelSet itself or a MicroBatcher in front of it;
    `batch_decoder` is the one batch items use (the batcher at batch priority). `attempts` is the poison
    guard's record, the one the batcher writes (a plain ModelSet is wrapped to write it, see `tracked`)."""

    model: Any  # model.inference.ModelSet (typed loosely: this module never imports torch)
    decoder: Decoder
    batch_decoder: Decoder
    rc_decode: Any = None
    chat_decode: Any = None
    history_turns: int = 6
    max_attempts: int = 3
    attempts: AttemptLog = field(default_factory=LocalAttempts)

    def tracked(self, *, batch: bool = False) -> TrackedDecoder:
        """The decoder (`batch_decoder` with batch) as one that records decodes in `attempts`."""
        decoder = self.batch_decoder if batch else self.decoder
        return decoder if isinstance(decoder, TrackedDecoder) else Unbatched(decoder, self.attempts)

    def suspects(self, keys: Sequence[str]) -> dict[str, int]:
        """Of `keys`, those whose decode was cut short before, with how often. A record that cannot be read
        (Redis not answering) counts as none, as one that cannot be written does (workers/microbatch.py): the
        guard is lost for these requests, not the requests. Before, the task failed on it and was acked as
        failed, so a chunk taken just before Redis died left its items to the sweeper and a chat turn pending
        for good."""
        try:
            return self.attempts.interrupted(keys)
        except Exception as error:
            logger.warning("could not read how often %d request(s) were cut short: %s", len(keys), error)
            return {}

    def chat_decode_for(self, message: str, requested: dict[str, Any] | None) -> Any:
        """The chat decoding settings for one reply: the configured ones (or the model's own defaults for the
        message's language) overridden by what the user asked for. None means the model's defaults."""
        if not requested:
            return self.chat_decode
        base = self.chat_decode or self.model.default_decode("chat", detect_language(message))
        return base.with_request(requested)

    def provenance(self, task: str, request: Any, decode: Any) -> tuple[str, dict[str, Any]]:
        """What is stored beside an answer: the version of the model that decoded `request` and the decoding
        settings it ran with (`decode`, or with None that model's defaults). One routing for both
        (ModelSet.predictor_for_request)."""
        predictor = self.model.predictor_for_request(task, request)
        used = decode if decode is not None else predictor.default_decode
        return str(predictor.version), dict(used.to_dict())

    def version(self, task: str, request: Any) -> str:
        """The version of the model that decodes `request` ((question, passage) for "rc", a history for "chat")."""
        return str(self.model.predictor_for_request(task, request).version)


def reply_to_turn(engine: Engine, serving: Serving, turn_id: int) -> dict[str, Any]:
    """Decode the reply for a pending assistant turn from its conversation history and store it."""
    key = request_key("turn", turn_id)
    cut_short = serving.suspects([key]).get(key, 0)
    with transaction(engine) as db:
        status = conversations.turn_status(db, turn_id=turn_id)
        if status is not TurnStatus.PENDING:  # answered already (a redelivery), or stopped by the user
            logger.info("reply %s skipped: it is %s", turn_id, status.value)
            return conversations.turn_outcome(db, turn_id=turn_id)
        if cut_short >= serving.max_attempts:
            conversations.fail_reply(db, turn_id=turn_id, error=GAVE_UP.format(attempts=cut_short))
            return conversations.turn_outcome(db, turn_id=turn_id)
        history = conversations.history_for(db, turn_id=turn_id, max_turns=serving.history_turns)
        requested = conversations.requested_decoding(db, turn_id=turn_id)
    started = time.perf_counter()
    try:
        decode = serving.chat_decode_for(history[-1] if history else "", requested)
        hypotheses = serving.tracked().reply([history], decode, keys=[key], alone={key} if cut_short else ())[
            0
        ]
        if not hypotheses:
            raise ValueError("the model produced no reply")
    except Exception as error:  # InputError, timeout: the user sees the message
        with transaction(engine) as db:
            conversations.fail_reply(db, turn_id=turn_id, error=str(error) or type(error).__name__)
            return conversations.turn_outcome(db, turn_id=turn_id)
    latency_ms = (time.perf_counter() - started) * 1000.0
    best = hypotheses[0]
    model_version, decoding = serving.provenance("chat", history, decode)
    with transaction(engine) as db:
        saved = conversations.save_reply(
            db,
            turn_id=turn_id,
            text=best.text,
            model_version=model_version,
            decoding=decoding,
            latency_ms=latency_ms,
        )
        if not saved:  # answered or failed meanwhile (a redelivery raced it): report what is stored
            return conversations.turn_outcome(db, turn_id=turn_id)
    return conversations.turn_outcome_of(
        turn_id=turn_id,
        status=TurnStatus.DONE,
        text=best.text,
        model_version=model_version,
        latency_ms=latency_ms,
    )


def answer_question(engine: Engine, serving: Serving, question_id: str) -> dict[str, Any]:
    """Answer one pending interactive question about its passage and store the n-best list and attention."""
    key = request_key("question", question_id)
    cut_short = serving.suspects([key]).get(key, 0)
    with transaction(engine) as db:
        request = questions.question_input(db, question_id=question_id)
        if request is None:  # answered already (a redelivery), or stopped by the user
            outcome = questions.question_outcome(db, question_id=question_id)
            logger.info("question %s skipped: it is %s", question_id, outcome["status"])
            return outcome
        if cut_short >= serving.max_attempts:
            questions.fail_question(db, question_id=question_id, error=GAVE_UP.format(attempts=cut_short))
            return questions.question_outcome(db, question_id=question_id)
    started = time.perf_counter()
    try:
        pairs = [(request.question, request.passage)]
        hypotheses = serving.tracked().answer(
            pairs, serving.rc_decode, keys=[key], alone={key} if cut_short else ()
        )[0]
        if not hypotheses:
            raise ValueError("the model produced no answer")
    except Exception as error:
        with transaction(engine) as db:
            questions.fail_question(db, question_id=question_id, error=str(error) or type(error).__name__)
            return questions.question_outcome(db, question_id=question_id)
    latency_ms = (time.perf_counter() - started) * 1000.0
    best = hypotheses[0]
    pair = (request.question, request.passage)
    model_version, decoding = serving.provenance("rc", pair, serving.rc_decode)
    n_best = [hypothesis.to_dict() for hypothesis in hypotheses]
    with transaction(engine) as db:
        saved = questions.save_answer(
            db,
            question_id=question_id,
            answer=best.text,
            score=best.score,
            model_version=model_version,
            n_best=n_best,
            attention=attention_record(n_best[0]),
            decoding=decoding,
            latency_ms=latency_ms,
        )
        if not saved:  # answered or failed meanwhile (a redelivery raced it): report what is stored
            return questions.question_outcome(db, question_id=question_id)
    return questions.question_outcome_of(
        question_id=question_id,
        status=QuestionStatus.DONE,
        answer=best.text,
        score=best.score,
        span=n_best[0]["span"],
        n_best=n_best,
        model_version=model_version,
        latency_ms=latency_ms,
    )


def attention_record(data: dict[str, Any]) -> dict[str, Any]:
    """The attention data of a hypothesis (its to_dict()), in the shape storage.models.Question.attention
    documents."""
    return {
        "source_tokens": data["source_tokens"],
        "output_tokens": data["tokens"],
        "attention": data["attention"],
        "p_gen": data["p_gen"],
        "span": data["span"],
        **({"pointer": data["pointer"]} if data.get("pointer") else {}),
    }


def plan_job(
    engine: Engine, job_id: str, *, chunk_size: int, queued: Collection[int] = ()
) -> list[list[int]]:
    """The job's pending item ids in chunks of `chunk_size`, file order, leaving out those a queued message
    already carries (`queued`); [] if the job is no longer active."""
    with transaction(engine) as db:
        if batch_jobs.job_status(db, job_id=job_id) not in batch_jobs.ACTIVE_JOB:
            return []
        pending = batch_jobs.pending_item_ids(db, job_id=job_id)
        if not pending:
            batch_jobs.finish_job_if_complete(db, job_id=job_id)
    item_ids = [item_id for item_id in pending if item_id not in queued]
    return [item_ids[start : start + chunk_size] for start in range(0, len(item_ids), chunk_size)]


def answer_items(engine: Engine, serving: Serving, job_id: str, item_ids: Sequence[int]) -> dict[str, int]:
    """Answer the still-pending items among `item_ids` of an active job; return counts of what happened."""
    outcome = {"answered": 0, "failed": 0, "skipped": 0}
    keys = {item_id: request_key("item", item_id) for item_id in item_ids}
    cut_short = serving.suspects(list(keys.values()))
    with transaction(engine) as db:
        if batch_jobs.job_status(db, job_id=job_id) not in batch_jobs.ACTIVE_JOB:
            outcome["skipped"] = len(item_ids)
            return outcome  # cancelled or failed: the remaining items are not decoded
        batch_jobs.start_job(db, job_id=job_id)
        inputs = []
        for item_id in item_ids:
            item = batch_jobs.pending_item(db, item_id=item_id)
            times = cut_short.get(keys[item_id], 0)
            if item is None:
                outcome["skipped"] += 1
            elif times >= serving.max_attempts:
                batch_jobs.record_item_failure(db, item_id=item_id, error=GAVE_UP.format(attempts=times))
                outcome["failed"] += 1
            else:
                inputs.append(item)
        if outcome["failed"]:
            batch_jobs.finish_job_if_complete(db, job_id=job_id)
    if not inputs:
        return outcome
    decoder = serving.tracked(batch=True)

    def answer(batch: list[Any]) -> list[Any]:
        pairs = [(item.question, item.passage) for item in batch]
        return decoder.answer(
            pairs, serving.rc_decode, keys=[keys[item.item_id] for item in batch], alone=cut_short
        )

    results = decode_each(answer, inputs)
    with transaction(engine) as db:
        for item, result in zip(inputs, results, strict=True):
            if isinstance(result, Exception) or not result:
                error = str(result) if isinstance(result, Exception) else "the model produced no answer"
                stored = batch_jobs.record_item_failure(db, item_id=item.item_id, error=error)
                outcome["failed"] += int(stored)
            else:
                best = result[0]
                stored = batch_jobs.record_item_answer(
                    db,
                    item_id=item.item_id,
                    answer=best.text,
                    score=best.score,
                    model_version=serving.version("rc", (item.question, item.passage)),
                )
                outcome["answered"] += int(stored)
            outcome["skipped"] += int(not stored)  # cancelled while it was decoding
        batch_jobs.finish_job_if_complete(db, job_id=job_id)
    return outcome


def decode_each(call: Callable[[list[Any]], list[Any]], requests: list[Any]) -> list[Any]:
    """`call(requests)`; if it fails, each request alone, so a bad one becomes its own exception in the list."""
    try:
        return list(call(requests))
    except Exception as error:
        if len(requests) == 1:
            return [error]
    results: list[Any] = []
    for request in requests:
        try:
            results.append(call([request])[0])
        except Exception as error:
            results.append(error)
    return results
