"""Give back messages a killed worker held, as soon as a worker starts, instead of after the visibility timeout.

With late acks the Redis transport keeps every delivered, unacknowledged message in the `unacked` hash and
puts it back on its queue only when it is older than the visibility timeout (an hour by default), so a job
whose worker was SIGKILLed would stall that long. A worker that starts while no other worker's heartbeat is
alive knows every entry there belongs to a dead worker (its own consumer has not started yet), and restores
them all at once. With other workers alive it leaves the entries alone: they may be theirs, and the
visibility timeout still covers a dead one. Redelivery is safe because tasks are idempotent.
"""

from __future__ import annotations

import json
import logging
import socket

import redis
from celery import Celery

from workers.heartbeat import HEARTBEAT_PREFIX, heartbeat_key

logger = logging.getLogger(__name__)

UNACKED_KEY = "unacked"  # kombu.transport.redis.Channel.unacked_key


def other_live_workers(client: redis.Redis, *, nodename: str) -> list[str]:
    """Heartbeat keys of other workers, leaving out ones from this machine whose process is gone (kill -9)."""
    from workers.service_discovery import pid_alive

    own = heartbeat_key(nodename)
    live = []
    for raw_key in client.scan_iter(match=HEARTBEAT_PREFIX + "*"):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        raw = client.get(key)
        if key == own or raw is None:
            continue
        record = json.loads(raw)
        if record.get("host") == socket.gethostname() and not pid_alive(int(record.get("pid", 0))):
            continue
        live.append(key)
    return live


def restore_orphaned_messages(app: Celery, client: redis.Redis, *, nodename: str) -> int:
    """Put every unacked message back on its queue if no other worker is alive; return how many."""
    others = other_live_workers(client, nodename=nodename)
    if others:
        logger.info("not restoring unacked messages: other workers are alive (%s)", ", ".join(others))
        return 0
    tags = [tag.decode() if isinstance(tag, bytes) else str(tag) for tag in client.hkeys(UNACKED_KEY)]
    if not tags:
        return 0
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for tag in tags:
            qos.restore_by_tag(tag, leftmost=True)
    logger.warning("restored %d unacknowledged message(s) left by a worker that stopped", len(tags))
    return len(tags)
