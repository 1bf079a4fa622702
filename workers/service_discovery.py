"""Where the running service is: the one function every command uses to find Redis.

`s2s up` writes S2S_DATA_DIR/service.json ({"redis_url", "pid", "database_url", "ui_url", "started_at"});
commands run from another terminal with the same data directory read it. REDIS_URL, when set, always wins.
Nothing here starts or stops anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from settings import Settings

SERVICE_FILE = "service.json"


class ServiceNotRunning(RuntimeError):
    """Neither REDIS_URL nor a live `s2s up` in the data directory."""


def service_file(settings: Settings) -> Path:
    return settings.data_dir / SERVICE_FILE


def shown_url(url: str) -> str:
    """`url` with its password, if any, replaced by *** : for anything printed or logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def write_service_file(settings: Settings, info: dict[str, Any]) -> Path:
    """Write service.json atomically (rename), so a reader never sees half a file; readable by its owner only,
    since the Redis URL in it may carry a password."""
    path = service_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(json.dumps(info, indent=2))
    temporary.replace(path)
    return path


def remove_service_file(settings: Settings, *, pid: int) -> None:
    """Remove service.json if it is still the one process `pid` wrote."""
    info = read_service_file(settings)
    if info is not None and info.get("pid") == pid:
        service_file(settings).unlink(missing_ok=True)


def read_service_file(settings: Settings) -> dict[str, Any] | None:
    path = service_file(settings)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def resolve_redis_url(settings: Settings) -> str:
    """REDIS_URL if set, else the Redis of a live `s2s up` in S2S_DATA_DIR; raise ServiceNotRunning otherwise."""
    if settings.redis_url:
        return settings.redis_url
    info = read_service_file(settings)
    if info is not None and isinstance(info.get("pid"), int) and pid_alive(info["pid"]):
        url = info.get("redis_url")
        if isinstance(url, str) and url:
            return url
    raise ServiceNotRunning(
        f"no service running (no live {service_file(settings)}): start `s2s up` or set REDIS_URL"
    )
