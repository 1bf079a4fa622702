"""Celery's Redis result store, without the read that comes before each successful write.

Before storing any state, Celery's key-value result backends GET the task's current result and keep it if it
says SUCCESS, so that a lost duplicate of a task cannot replace a success with a failure. That read is one
Redis round trip per answer, on the path between the worker finishing and the caller being woken.

This backend skips it only when the new state is itself SUCCESS: writing a success over a success cannot lose
one, and the service's tasks are idempotent (a duplicate reports what storage already holds), so two successes
of one task carry the same outcome. Every other state (FAILURE, RETRY, REVOKED) goes through Celery's own
guarded path unchanged, as does everything the caller side does (pub/sub waiting).

Used for plain `redis://` URLs, like workers/redis_transport.py (celery_app.result_backend_for).
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

BACKEND = "workers.result_backend:StoreOnceRedisBackend"


class StoreOnceRedisBackend(RedisBackend):
    def _store_result(self, task_id: Any, result: Any, state: str, traceback: Any = None, request: Any = None,
                      **kwargs: Any) -> Any:
        if state != states.SUCCESS:
            return super()._store_result(task_id, result, state, traceback=traceback, request=request, **kwargs)
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as error:
            raise BackendStoreError(str(error), state=state, task_id=task_id) from error
        return result
