"""The micro-batcher with a fake model: concurrent requests share one call, interactive goes first, and each named
request is recorded as decoding only while its model call runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.workers.service_fixtures import redis_for_tests
from workers.attempts import ATTEMPTS_PREFIX, ATTEMPTS_TTL_S, LocalAttempts, RedisAttempts
from workers.microbatch import BATCH, MicroBatcher


class FakeModel:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[list[Any]] = []
        self.delay_s = delay_s

    def answer(self, questions: list[tuple[str, str]], decode: Any = None) -> list[list[Any]]:
        time.sleep(self.delay_s)
        if any(question == "bad" for question, _ in questions):
            raise ValueError("bad request")
        self.calls.append([question for question, _ in questions])
        return [[question.upper()] for question, _ in questions]

    def reply(self, histories: list[list[str]], decode: Any = None) -> list[list[Any]]:
        self.calls.append([history[-1] for history in histories])
        return [[history[-1][::-1]] for history in histories]


def _run_clients(batcher: MicroBatcher, questions: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    start = threading.Barrier(len(questions))

    def client(question: str) -> None:
        with batcher.expecting():
            start.wait()
            try:
                results[question] = batcher.answer([(question, "p")])[0]
            except ValueError as error:
                results[question] = error

    threads = [threading.Thread(target=client, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_requests_are_decoded_in_one_call() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_size=16, max_wait_ms=200, timeout_s=5)
    batcher.start()
    questions = [f"q{i}" for i in range(8)]
    results = _run_clients(batcher, questions)
    batcher.stop()
    assert results == {q: [q.upper()] for q in questions}
    assert len(model.calls) == 1


def test_a_lone_request_is_not_held_back_by_the_wait() -> None:
    batcher = MicroBatcher(FakeModel(), max_size=16, max_wait_ms=1000, timeout_s=5)
    batcher.start()
    started = time.perf_counter()
    assert batcher.answer([("solo", "p")]) == [["SOLO"]]
    batcher.stop()
    assert time.perf_counter() - started < 0.5


def test_a_bad_request_fails_alone() -> None:
    batcher = MicroBatcher(FakeModel(), max_size=16, max_wait_ms=200, timeout_s=5)
    batcher.start()
    results = _run_clients(batcher, ["good", "bad", "fine"])
    batcher.stop()
    assert results["good"] == ["GOOD"] and results["fine"] == ["FINE"]
    assert isinstance(results["bad"], ValueError)


def test_interactive_requests_overtake_batch_items() -> None:
    model = FakeModel(delay_s=0.05)
    batcher = MicroBatcher(model, max_size=2, max_wait_ms=0, timeout_s=5)
    batcher.start()
    first = threading.Thread(target=batcher.answer, args=([("warm", "p")],))
    first.start()
    time.sleep(0.01)  # the batcher is busy decoding "warm"
    batch = threading.Thread(
        target=batcher.answer, args=([("b1", "p"), ("b2", "p")],), kwargs={"priority": BATCH}
    )
    batch.start()
    time.sleep(0.01)
    assert batcher.reply([["chat"]]) == [["tahc"]]
    for thread in (first, batch):
        thread.join()
    batcher.stop()
    assert model.calls[1] == ["chat"] or model.calls[1][0] == "chat"


def test_the_watchdog_reports_a_model_call_that_runs_past_the_limit_once() -> None:
    stuck: list[float] = []
    batcher = MicroBatcher(
        FakeModel(delay_s=0.6),
        max_size=4,
        max_wait_ms=0,
        timeout_s=5,
        stuck_after_s=0.2,
        on_stuck=stuck.append,
    )
    batcher.start()
    assert batcher.answer([("slow", "p")]) == [
        ["SLOW"]
    ]  # the call still finishes; the worker decides what to do
    batcher.stop()
    assert len(stuck) == 1 and 0.2 < stuck[0] < 0.6


def test_the_watchdog_stays_quiet_while_calls_finish_in_time() -> None:
    stuck: list[float] = []
    batcher = MicroBatcher(
        FakeModel(delay_s=0.05),
        max_size=4,
        max_wait_ms=0,
        timeout_s=5,
        stuck_after_s=0.3,
        on_stuck=stuck.append,
    )
    batcher.start()
    for _ in range(10):  # 0.5 s of calls, each well under the limit
        batcher.answer([("quick", "p")])
    time.sleep(0.4)  # idle time between calls does not count
    batcher.stop()
    assert stuck == []


class SeenWhileDecoding(LocalAttempts):
    """An AttemptLog that also notes what it holds at each model call (read by the model below)."""

    def __init__(self) -> None:
        super().__init__()
        self.during_calls: list[dict[str, int]] = []


def test_a_request_counts_as_decoding_only_during_its_model_call() -> None:
    attempts = SeenWhileDecoding()

    class Model(FakeModel):
        def answer(self, questions: list[tuple[str, str]], decode: Any = None) -> list[list[Any]]:
            attempts.during_calls.append(attempts.interrupted(["item:1", "item:2", "item:3"]))
            return super().answer(questions, decode)

    model = Model()
    batcher = MicroBatcher(model, max_size=16, max_wait_ms=0, timeout_s=5, attempts=attempts)
    batcher.start()
    assert batcher.answer(
        [("a", "p"), ("b", "p"), ("c", "p")],
        keys=["item:1", "item:2", "item:3"],
        alone={"item:2"},
        priority=BATCH,
    ) == [["A"], ["B"], ["C"]]
    assert batcher.answer([("d", "p")]) == [["D"]]  # an unnamed request is not recorded
    batcher.stop()
    assert model.calls == [["a", "c"], ["b"], ["d"]]  # the one named alone got a call of its own
    assert attempts.during_calls[:2] == [{"item:1": 1, "item:3": 1}, {"item:2": 1}]
    assert attempts.interrupted(["item:1", "item:2", "item:3"]) == {}  # every call ended: nothing counted


def test_a_failed_model_call_is_not_counted_against_its_requests() -> None:
    attempts = LocalAttempts()
    batcher = MicroBatcher(FakeModel(), max_size=16, max_wait_ms=0, timeout_s=5, attempts=attempts)
    batcher.start()
    with pytest.raises(ValueError):
        batcher.answer([("bad", "p")], keys=["question:q"])
    batcher.stop()
    assert attempts.interrupted(["question:q"]) == {}


def test_a_redis_record_counts_unfinished_decodes_and_leaves_no_key_when_they_end(tmp_path: Path) -> None:
    with redis_for_tests(tmp_path) as url:
        client = redis.Redis.from_url(url)
        attempts = RedisAttempts(client)
        attempts.started(["item:1", "item:2"])
        attempts.started(["item:1"])  # a second decode of item 1, e.g. after a worker died in the first
        assert attempts.interrupted(["item:1", "item:2", "item:3"]) == {"item:1": 2, "item:2": 1}
        assert 0 < client.ttl(ATTEMPTS_PREFIX + "item:1") <= ATTEMPTS_TTL_S
        attempts.finished(["item:1", "item:2"])
        assert attempts.interrupted(["item:1", "item:2"]) == {"item:1": 1}
        attempts.finished(["item:1"])
        assert client.keys(ATTEMPTS_PREFIX + "*") == []


def test_decode_ends_redis_did_not_take_are_sent_once_it_answers_again(tmp_path: Path) -> None:
    """A real redis-server killed between a decode's start and its end, then started again on its append-only
    file: the end is owed, not raised nor dropped, and the counter is gone once Redis answers."""
    from tests.workers.service_fixtures import own_redis

    with own_redis(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
        attempts = RedisAttempts(client)
        attempts.started(["item:1", "item:2"])
        attempts.started(["item:2"])  # item 2 was cut short once before: it stays at 1 after this decode
        server.kill()
        attempts.finished(["item:1", "item:2"])  # Redis down: kept
        assert attempts.owed() == {"item:1": 1, "item:2": 1}
        with pytest.raises(redis.ConnectionError):
            attempts.interrupted(["item:1"])  # a count read now would include what is owed: none is read
        server.start()
        deadline = time.monotonic() + 10
        while attempts.owed() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert attempts.owed() == {}
        assert client.get(ATTEMPTS_PREFIX + "item:1") is None
        assert attempts.interrupted(["item:1", "item:2"]) == {"item:2": 1}
