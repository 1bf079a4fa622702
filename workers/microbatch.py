"""The micro-batcher: requests from many task threads decoded together in one batched model call.

The worker runs Celery's threads pool with many threads; each task thread reads its request from the database,
hands it to the batcher (`answer` / `reply`, the same signatures as ModelSet) and blocks until its result is
ready. One batcher thread owns the model: it takes up to `max_size` waiting requests (interactive before
batch, then oldest first), groups them by task and decoding settings, and makes one ModelSet call per group.

It waits for companions only when more are known to be coming: task threads announce themselves with
`expecting()` before they touch the database, and the batcher holds a batch open (at most `max_wait_ms`) only
while announced requests have not arrived yet. One client alone therefore never pays the wait, and under load
the requests that pile up during a decode form the next batch. If a batched call fails, every request of the
group is decoded alone, so one bad input fails only itself. This module knows nothing of Celery or storage.

The poison guard (workers/attempts.py): callers name their requests (`keys`), and the batcher thread records in
its AttemptLog when the decode of each named request starts and when it ends, around the model call itself:
a request that was only waiting when its worker died is never counted. Requests a caller names in `alone` (ones
whose earlier decode did not end, so possibly what killed the worker) are decoded in a call of their own, so a
poison input cannot take the requests batched with it down again and again.

Time limits: a task thread waits at most `timeout_s` for its result. A decode call itself cannot be interrupted
(Celery's threads pool enforces no time limit), so with `stuck_after_s` a watchdog thread calls `on_stuck` once
when one model call has run that long: the worker's runtime then exits the process, as prefork's hard time limit
would, and its unacknowledged messages are delivered again to a fresh worker.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from workers import metrics
from workers.attempts import AttemptLog

logger = logging.getLogger(__name__)

INTERACTIVE = 0
BATCH = 1


class Decoder(Protocol):
    """What jobs.py decodes with: a ModelSet, or a MicroBatcher in front of one."""

    def answer(self, questions: list[tuple[str, str]], decode: Any = None) -> list[list[Any]]: ...

    def reply(self, histories: list[list[str]], decode: Any = None) -> list[list[Any]]: ...


Keys = Sequence[str | None] | None  # one per request: its name in the AttemptLog, or None for an unnamed one


class TrackedDecoder(ABC):
    """A Decoder told which request is which: it records in an AttemptLog when the decode of each named request
    (`keys`) starts and ends, and decodes the requests named in `alone` each in a model call of its own.
    `answer` and `reply` are one call, `_decode`, which each kind of decoder implements."""

    def answer(
        self,
        questions: list[tuple[str, str]],
        decode: Any = None,
        *,
        keys: Keys = None,
        alone: Collection[str] = (),
    ) -> list[list[Any]]:
        return self._decode("answer", questions, decode, keys, alone)

    def reply(
        self,
        histories: list[list[str]],
        decode: Any = None,
        *,
        keys: Keys = None,
        alone: Collection[str] = (),
    ) -> list[list[Any]]:
        return self._decode("reply", histories, decode, keys, alone)

    @abstractmethod
    def _decode(
        self, kind: str, payloads: Sequence[Any], decode: Any, keys: Keys, alone: Collection[str]
    ) -> list[list[Any]]:
        """The requests `payloads` of one kind ("answer" | "reply"), decoded: one result list each, in order."""


def _keys_for(payloads: Sequence[Any], keys: Keys) -> list[str | None]:
    named: list[str | None] = list(keys) if keys is not None else [None] * len(payloads)
    if len(named) != len(payloads):
        raise ValueError(f"{len(named)} keys for {len(payloads)} requests")
    return named


def _model_call(model: Decoder, kind: str) -> Callable[[list[Any], Any], list[list[Any]]]:
    return model.answer if kind == "answer" else model.reply


def _tracked_call(
    call: Callable[[list[Any], Any], list[list[Any]]],
    attempts: AttemptLog | None,
    payloads: list[Any],
    decode: Any,
    keys: Sequence[str | None],
) -> list[list[Any]]:
    """`call(payloads, decode)` with its named requests recorded as decoding while it runs. A record that cannot
    be written (Redis down) is logged and the decode goes ahead: the guard is lost for it, not the request."""
    named = [key for key in keys if key is not None]
    _record(attempts, "started", named)
    try:
        return call(payloads, decode)
    finally:
        _record(attempts, "finished", named)


def _record(attempts: AttemptLog | None, event: str, keys: list[str]) -> None:
    if attempts is None or not keys:
        return
    try:
        getattr(attempts, event)(keys)
    except Exception as error:
        logger.warning("could not record that %d decode(s) %s: %s", len(keys), event, error)


class Unbatched(TrackedDecoder):
    """A plain Decoder (a ModelSet) as a TrackedDecoder, for callers without a micro-batcher: one model call per
    request list, the `alone` ones each in a call of their own."""

    def __init__(self, model: Decoder, attempts: AttemptLog | None) -> None:
        self.model = model
        self.attempts = attempts

    def _decode(
        self, kind: str, payloads: Sequence[Any], decode: Any, keys: Keys, alone: Collection[str]
    ) -> list[list[Any]]:
        call = _model_call(self.model, kind)
        named = _keys_for(payloads, keys)
        results: list[list[Any] | None] = [None] * len(payloads)
        for group in _groups(named, alone):
            for index, result in zip(
                group,
                _tracked_call(
                    call, self.attempts, [payloads[i] for i in group], decode, [named[i] for i in group]
                ),
                strict=True,
            ):
                results[index] = result
        return [result for result in results if result is not None]


def _groups(keys: Sequence[str | None], alone: Collection[str]) -> list[list[int]]:
    """Indexes of `keys` in model calls: each one named in `alone` by itself, the rest together, in order."""
    together: list[int] = []
    groups: list[list[int]] = []
    for index, key in enumerate(keys):
        if key is not None and key in alone:
            groups.append([index])
        else:
            together.append(index)
    return ([together] if together else []) + groups


@dataclass
class _Request:
    kind: str  # "answer" | "reply"
    payload: Any  # (question, passage) or a history
    decode: Any
    key: str | None = None  # its name in the AttemptLog
    alone: bool = False  # decoded in a model call of its own
    future: Future[list[Any]] = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    largest: int = 0

    def as_dict(self) -> dict[str, float]:
        mean = self.requests / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "requests": self.requests,
            "largest": self.largest,
            "mean_size": mean,
        }


class MicroBatcher(TrackedDecoder):
    """Collects requests from many threads and decodes them in batches on one thread."""

    def __init__(
        self,
        model: Decoder,
        *,
        max_size: int,
        max_wait_ms: float,
        timeout_s: float,
        stuck_after_s: float | None = None,
        on_stuck: Callable[[float], None] | None = None,
        attempts: AttemptLog | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.model = model
        self.max_size = max_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.timeout_s = timeout_s
        self.stuck_after_s = stuck_after_s
        self.on_stuck = on_stuck
        self.attempts = attempts
        self._decoding_since: float | None = None  # monotonic start of the model call in progress
        self.stats = BatchStats()
        self._queues: tuple[deque[_Request], deque[_Request]] = (deque(), deque())
        self._cond = threading.Condition()
        self._expected = 0
        self._local = threading.local()
        self._running = False
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._loop, name="s2s-microbatcher", daemon=True)
        self._thread.start()
        if self.stuck_after_s is not None and self.on_stuck is not None:
            threading.Thread(target=self._watch, name="s2s-microbatcher-watchdog", daemon=True).start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # --- caller side (task threads) ----------------------------------------------------------------------

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce that this thread is about to submit; the announcement ends at submit or at exit."""
        with self._cond:
            self._expected += 1
        self._local.expected = True
        try:
            yield
        finally:
            self._withdraw()

    def answer(
        self,
        questions: list[tuple[str, str]],
        decode: Any = None,
        *,
        keys: Keys = None,
        alone: Collection[str] = (),
        priority: int = INTERACTIVE,
    ) -> list[list[Any]]:
        return self._decode("answer", questions, decode, keys, alone, priority)

    def reply(
        self,
        histories: list[list[str]],
        decode: Any = None,
        *,
        keys: Keys = None,
        alone: Collection[str] = (),
        priority: int = INTERACTIVE,
    ) -> list[list[Any]]:
        return self._decode("reply", histories, decode, keys, alone, priority)

    def _decode(
        self,
        kind: str,
        payloads: Sequence[Any],
        decode: Any,
        keys: Keys,
        alone: Collection[str],
        priority: int = INTERACTIVE,
    ) -> list[list[Any]]:
        return self._wait(self._submit(kind, payloads, decode, priority, keys, alone))

    def at_priority(self, priority: int) -> TrackedDecoder:
        """This batcher seen by callers of one priority (BATCH for batch items): the same calls, queued there."""
        return _AtPriority(self, priority)

    def _withdraw(self) -> None:
        if getattr(self._local, "expected", False):
            self._local.expected = False
            with self._cond:
                self._expected -= 1
                self._cond.notify_all()

    def _submit(
        self,
        kind: str,
        payloads: Sequence[Any],
        decode: Any,
        priority: int,
        keys: Keys = None,
        alone: Collection[str] = (),
    ) -> list[_Request]:
        requests = [
            _Request(
                kind=kind, payload=payload, decode=decode, key=key, alone=key is not None and key in alone
            )
            for payload, key in zip(payloads, _keys_for(payloads, keys), strict=True)
        ]
        announced = getattr(self._local, "expected", False)
        self._local.expected = False
        with self._cond:
            if not self._running:
                raise RuntimeError("the micro-batcher is not running")
            self._queues[priority].extend(requests)
            if announced:
                self._expected -= 1
            self._cond.notify_all()
        return requests

    def _wait(self, requests: list[_Request]) -> list[list[Any]]:
        deadline = time.monotonic() + self.timeout_s
        return [request.future.result(timeout=max(deadline - time.monotonic(), 0.0)) for request in requests]

    # --- the batcher thread ------------------------------------------------------------------------------

    def _waiting(self) -> int:
        return len(self._queues[INTERACTIVE]) + len(self._queues[BATCH])

    def _take_batch(self) -> list[_Request]:
        with self._cond:
            while self._running and not self._waiting():
                self._cond.wait()
            if not self._running:
                return []
            deadline = time.monotonic() + self.max_wait_s
            while self._waiting() < self.max_size and self._expected > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[_Request] = []
            for queue in self._queues:
                while queue and len(batch) < self.max_size:
                    batch.append(queue.popleft())
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                if not self._running:
                    self._fail_leftovers()
                    return
                continue
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            taken = time.monotonic()
            metrics.observe_batch(len(batch), (taken - request.submitted for request in batch))
            groups: dict[tuple[str, Any, int], list[_Request]] = {}
            for request in batch:
                alone = id(request) if request.alone else 0
                groups.setdefault((request.kind, request.decode, alone), []).append(request)
            for (kind, decode, _), group in groups.items():
                self._decode_group(kind, decode, group)

    def _decode_group(self, kind: str, decode: Any, group: list[_Request]) -> None:
        call = _model_call(self.model, kind)
        started = time.perf_counter()
        self._decoding_since = time.monotonic()
        try:
            results = _tracked_call(
                call,
                self.attempts,
                [request.payload for request in group],
                decode,
                [request.key for request in group],
            )
        except Exception as error:
            self._decoding_since = None
            if len(group) == 1:
                logger.warning("decoding one %s request failed: %s", kind, error)
                metrics.count_error("decode", kind, error)
                group[0].future.set_exception(error)
                return
            logger.warning("a batched %s call of %d failed; decoding them one by one", kind, len(group))
            for request in group:
                self._decode_group(kind, decode, [request])
            return
        self._decoding_since = None
        metrics.observe_decode(kind, time.perf_counter() - started)
        for request, result in zip(group, results, strict=True):
            request.future.set_result(result)

    def _watch(self) -> None:
        """Call on_stuck once if a model call runs longer than stuck_after_s."""
        assert self.stuck_after_s is not None and self.on_stuck is not None
        interval = min(1.0, self.stuck_after_s / 10)
        while self._running:
            since = self._decoding_since
            if since is not None and time.monotonic() - since > self.stuck_after_s:
                self.on_stuck(time.monotonic() - since)
                return
            time.sleep(interval)

    def _fail_leftovers(self) -> None:
        with self._cond:
            for queue in self._queues:
                while queue:
                    queue.popleft().future.set_exception(RuntimeError("the worker is shutting down"))


class _AtPriority(TrackedDecoder):
    def __init__(self, batcher: MicroBatcher, priority: int) -> None:
        self.batcher = batcher
        self.priority = priority

    def _decode(
        self, kind: str, payloads: Sequence[Any], decode: Any, keys: Keys, alone: Collection[str]
    ) -> list[list[Any]]:
        return self.batcher._decode(kind, payloads, decode, keys, alone, self.priority)
