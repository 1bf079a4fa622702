"""Prometheus metrics: recorded where the events happen, served by the worker's HTTP server and the UI route."""

from __future__ import annotations

import socket
import time
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from settings import Settings
from workers import metrics
from workers.microbatch import MicroBatcher


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class EchoModel:
    """Answers every question with its first word; fails on a question that is "boom"."""

    def answer(self, questions: list[tuple[str, str]], decode: Any = None) -> list[list[str]]:
        if any(question == "boom" for question, _ in questions):
            raise ValueError("boom")
        return [[question.split()[0]] for question, _ in questions]

    def reply(self, histories: list[list[str]], decode: Any = None) -> list[list[str]]:
        return [[history[-1]] for history in histories]


@pytest.fixture
def batcher() -> Any:
    batcher = MicroBatcher(EchoModel(), max_size=8, max_wait_ms=1.0, timeout_s=10.0)
    batcher.start()
    yield batcher
    batcher.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_microbatcher_records_batch_sizes_waits_and_decode_time(batcher: MicroBatcher) -> None:
    batches = sample("s2s_worker_microbatch_size_count")
    requests = sample("s2s_worker_microbatch_size_sum")
    waits = sample("s2s_worker_microbatch_wait_seconds_count")
    decodes = sample("s2s_worker_decode_seconds_count", call="answer")
    assert batcher.answer([("where is it", "p"), ("who", "p"), ("what", "p")]) == [
        ["where"],
        ["who"],
        ["what"],
    ]
    assert sample("s2s_worker_microbatch_size_count") >= batches + 1
    assert sample("s2s_worker_microbatch_size_sum") == requests + 3
    assert sample("s2s_worker_microbatch_wait_seconds_count") == waits + 3
    assert sample("s2s_worker_decode_seconds_count", call="answer") >= decodes + 1


def test_a_failing_decode_counts_one_error(batcher: MicroBatcher) -> None:
    before = sample("s2s_worker_errors_total", where="decode", kind="answer", error="ValueError")
    with pytest.raises(ValueError):
        batcher.answer([("boom", "p")])
    assert sample("s2s_worker_errors_total", where="decode", kind="answer", error="ValueError") == before + 1


def test_task_signals_record_queue_wait_duration_and_outcome() -> None:
    task = SimpleNamespace(
        name="workers.answer_question", request=SimpleNamespace(**{metrics.SENT_AT_HEADER: time.time() - 0.5})
    )
    waits = sample("s2s_worker_queue_wait_seconds_count", kind="question")
    wait_sum = sample("s2s_worker_queue_wait_seconds_sum", kind="question")
    runs = sample("s2s_worker_task_seconds_count", kind="question")
    done = sample("s2s_worker_requests_total", kind="question", outcome="done")
    metrics._on_task_prerun(task_id="t-1", task=task)
    metrics._on_task_postrun(task_id="t-1", task=task, retval={"status": "done"}, state="SUCCESS")
    assert sample("s2s_worker_queue_wait_seconds_count", kind="question") == waits + 1
    assert sample("s2s_worker_queue_wait_seconds_sum", kind="question") - wait_sum >= 0.5
    assert sample("s2s_worker_task_seconds_count", kind="question") == runs + 1
    assert sample("s2s_worker_requests_total", kind="question", outcome="done") == done + 1


def test_batch_chunks_count_each_item_by_outcome() -> None:
    task = SimpleNamespace(name="workers.answer_items", request=SimpleNamespace())
    answered = sample("s2s_worker_requests_total", kind="batch_item", outcome="answered")
    failed = sample("s2s_worker_requests_total", kind="batch_item", outcome="failed")
    metrics._on_task_postrun(
        task_id="t-2", task=task, retval={"answered": 7, "failed": 1, "skipped": 0}, state="SUCCESS"
    )
    assert sample("s2s_worker_requests_total", kind="batch_item", outcome="answered") == answered + 7
    assert sample("s2s_worker_requests_total", kind="batch_item", outcome="failed") == failed + 1


def test_a_task_that_raises_counts_as_an_error() -> None:
    task = SimpleNamespace(name="workers.reply_to_turn")
    errors = sample("s2s_worker_errors_total", where="task", kind="reply", error="RuntimeError")
    outcomes = sample("s2s_worker_requests_total", kind="reply", outcome="error")
    metrics._on_task_failure(sender=task, exception=RuntimeError("database gone"))
    assert sample("s2s_worker_errors_total", where="task", kind="reply", error="RuntimeError") == errors + 1
    assert sample("s2s_worker_requests_total", kind="reply", outcome="error") == outcomes + 1


def test_queue_depth_is_read_at_scrape_time() -> None:
    depths = {"interactive": 2, "batch": 5}
    registry = CollectorRegistry()
    registry.register(metrics.RedisCollector(lambda: dict(depths), lambda: [{"queues": ["interactive"]}]))
    assert registry.get_sample_value("s2s_queue_depth", {"queue": "batch"}) == 5
    depths["batch"] = 9
    assert registry.get_sample_value("s2s_queue_depth", {"queue": "batch"}) == 9
    assert registry.get_sample_value("s2s_workers_alive", {"queue": "interactive"}) == 1
    assert registry.get_sample_value("s2s_workers_alive", {"queue": "batch"}) == 0


def test_a_scrape_while_redis_is_down_still_answers() -> None:
    def unreachable() -> dict[str, int]:
        raise ConnectionError("redis is down")

    registry = CollectorRegistry()
    registry.register(metrics.RedisCollector(unreachable))
    assert b"s2s_queue_depth" not in generate_latest(registry)


def test_worker_metrics_server_shows_counters_moving(
    batcher: MicroBatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "register_redis_collector", lambda registry=REGISTRY: None)
    port = free_port()
    bound = metrics.serve_metrics(
        port=port, host="127.0.0.1", node="test@host", device="cpu", versions={"rc/en": "tiny"}
    )
    assert bound == port

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def size_count(text: str) -> float:
        return float(
            next(
                line.split()[-1]
                for line in text.splitlines()
                if line.startswith("s2s_worker_microbatch_size_count")
            )
        )

    first = scrape()
    assert "s2s_worker_ready 1.0" in first
    batcher.reply([["hello"], ["there"]])
    assert size_count(scrape()) > size_count(first)
    # A second server on the same port is refused without stopping the worker.
    assert (
        metrics.serve_metrics(port=port, host="127.0.0.1", node="test@host", device="cpu", versions={})
        is None
    )


def test_ui_serves_metrics_on_the_gradio_app(monkeypatch: pytest.MonkeyPatch) -> None:
    import gradio as gr
    from fastapi.testclient import TestClient
    from gradio.routes import App

    from ui import metrics as ui_metrics

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # unreachable: the route must still answer
    with gr.Blocks() as demo:
        gr.Markdown("hello")
    app = App.create_app(demo, app_kwargs=ui_metrics.app_kwargs(Settings()))
    response = TestClient(app).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "process_cpu_seconds_total" in response.text or "python_info" in response.text
    assert ui_metrics.app_kwargs(Settings(S2S_UI_METRICS=False)) == {}
