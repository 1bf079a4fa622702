"""One `s2s up` per data directory: an exclusive lock on S2S_DATA_DIR/service.lock, held for the service's life.

A second `s2s up` on the same data directory would start a second Redis on the same append-only file, a UI on
a port already taken, and on its way out delete the first one's service.json. It takes this lock first and,
finding it held, refuses before it touches anything. The lock is an flock(2) on an open file: the kernel drops it
when the holder exits, even by SIGKILL, so a crashed service never blocks the next start. Children do not
inherit it (subprocess closes other descriptors). The file holds the holder's pid, to name it in the refusal.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from typing import IO

from settings import Settings
from workers.service_discovery import read_service_file, shown_url

LOCK_FILE = "service.lock"


class ServiceAlreadyRunning(RuntimeError):
    """Another `s2s up` holds the data directory's lock."""


@dataclass
class ServiceLock:
    file: IO[str]

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()  # closing the only descriptor drops the flock


def acquire_service_lock(settings: Settings) -> ServiceLock:
    """Take the data directory's lock, or raise ServiceAlreadyRunning naming the service that holds it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / LOCK_FILE
    file = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip()
        file.close()
        raise ServiceAlreadyRunning(_describe_holder(settings, holder)) from None
    file.seek(0)
    file.truncate()
    file.write(f"{os.getpid()}\n")
    file.flush()
    return ServiceLock(file=file)


def _describe_holder(settings: Settings, holder: str) -> str:
    info = read_service_file(settings)
    where = f"a service is already running in {settings.data_dir}"
    if info is not None and str(info.get("pid")) == holder:
        ui = f", UI {info['ui_url']}" if info.get("ui_url") else ""
        redis = shown_url(str(info.get("redis_url") or "?"))
        return f"{where} (pid {holder}, Redis {redis}{ui}); stop it first or use another S2S_DATA_DIR"
    pid = f"pid {holder}, " if holder else ""
    return f"{where} ({pid}still starting); stop it first or use another S2S_DATA_DIR"
