"""`s2s up`: run the whole service on one machine as child processes, and stop all of them cleanly.

Takes the data directory's lock first (supervisor/service_lock.py: a second `s2s up` there refuses before it
touches anything) and checks that the UI port is free. Then starts (in order) a private Redis unless REDIS_URL
is set, the database migrations, one worker (`s2s worker`) and the UI (`python -m ui.app`, when ui/app.py
exists), each in its own process group with its log in S2S_DATA_DIR/logs; writes S2S_DATA_DIR/service.json
so commands in other terminals find the service. On SIGINT/SIGTERM it stops the children in reverse order
(SIGTERM to the group, then SIGKILL after a grace period), removes service.json and releases the lock, leaving
no process behind.

A worker or UI that exits on its own (killed, out of memory, or stopped by its own watchdog after a stuck
decode) is started again, at most RESTART_LIMIT times within RESTART_WINDOW_S; the new worker puts back the
messages the dead one left unacknowledged, so nothing it held is lost. If Redis exits, or a child keeps
exiting, the whole service stops.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from settings import REPO_ROOT, Settings
from supervisor.embedded_redis import start_redis
from supervisor.orphans import terminate_with_parent
from supervisor.service_lock import ServiceLock, acquire_service_lock
from workers.service_discovery import remove_service_file, write_service_file

logger = logging.getLogger(__name__)

STOP_GRACE_S = 15.0
RESTART_LIMIT = 5  # restarts of one child within RESTART_WINDOW_S; one more exit stops the service
RESTART_WINDOW_S = 600.0
CHILD_NAMES = {
    "ui": "the UI",
    "worker": "the worker",
    "redis": "the private Redis",
}  # as the stop lines say them


class PortInUse(RuntimeError):
    """The UI's address is already taken by another process."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes] | None = None
    command: list[str] | None = None  # how to start it again; None: not restarted (Redis)
    env: dict[str, str] | None = None
    restarts: list[float] = field(default_factory=list)  # monotonic times of its restarts


@dataclass
class Service:
    settings: Settings
    children: list[Child] = field(default_factory=list)
    ui_url: str | None = None
    redis_url: str = ""
    stopping: bool = False
    record: dict[str, Any] = field(default_factory=dict)  # what service.json says
    lock: ServiceLock | None = None  # the data directory's lock, held until stop_service

    def write_record(self) -> None:
        self.record["children"] = {child.name: child.process.pid for child in self.children}
        write_service_file(self.settings, self.record)


def child_env(settings: Settings, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["REDIS_URL"] = redis_url
    env["DATABASE_URL"] = settings.resolved_database_url
    env["S2S_DATA_DIR"] = str(settings.data_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def spawn(name: str, command: list[str], *, env: dict[str, str], log_dir: Path) -> Child:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / f"{name}.log").open("ab")
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=terminate_with_parent,
    )
    return Child(name=name, process=process, log=log, command=command, env=env)


def stop_child(child: Child, *, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child's process group, wait, then SIGKILL what is left of the group."""
    process = child.process
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; make sure nothing else of its group survives
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    if child.log is not None:
        child.log.close()


def check_port_free(host: str, port: int) -> None:
    """Raise PortInUse if nothing can listen on host:port now (the UI would only fail later, in its log)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the UI's server does
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(
                f"the UI port {host}:{port} is already in use; free it or set S2S_UI_PORT"
            ) from None


def start_service(settings: Settings, *, with_ui: bool = True) -> Service:
    """Start every part; on a failure half-way, stop what was started and re-raise.

    Raises ServiceAlreadyRunning (another `s2s up` holds this data directory) or PortInUse before starting
    anything, and without touching the running service's files.
    """
    from storage import migrate

    lock = acquire_service_lock(settings)
    service = Service(settings=settings, lock=lock)
    log_dir = settings.data_dir / "logs"
    with_ui = with_ui and (REPO_ROOT / "ui" / "app.py").exists()
    try:
        if with_ui:
            check_port_free(settings.ui_host, settings.ui_port)
        if settings.redis_url:
            service.redis_url = settings.redis_url
        else:
            embedded = start_redis(settings.data_dir / "redis", log_file=log_dir / "redis.log")
            service.children.append(Child(name="redis", process=embedded.process))
            service.redis_url = embedded.url
        migrate.ensure_schema(settings.resolved_database_url)
        env = child_env(settings, service.redis_url)
        worker_command = [sys.executable, "-m", "cli.main", "worker", "--queues", "interactive,batch"]
        service.children.append(spawn("worker", worker_command, env=env, log_dir=log_dir))
        if with_ui:
            service.children.append(spawn("ui", [sys.executable, "-m", "ui.app"], env=env, log_dir=log_dir))
            service.ui_url = f"http://{settings.ui_host}:{settings.ui_port}"
        service.record = {
            "redis_url": service.redis_url,
            "pid": os.getpid(),
            "database_url": settings.resolved_database_url,
            "ui_url": service.ui_url,
            "started_at": datetime.now(UTC).isoformat(),
        }
        service.write_record()
    except BaseException:
        stop_service(service)
        raise
    return service


def stop_service(service: Service) -> None:
    """Stop every child, saying which (the UI and the worker first, Redis, which saves its data, last)."""
    service.stopping = True
    for child in reversed(service.children):
        stop_child(child)
        logger.info("stopped %s (pid %d)", CHILD_NAMES.get(child.name, child.name), child.process.pid)
    remove_service_file(service.settings, pid=os.getpid())
    if service.lock is not None:
        service.lock.release()
    if service.children:
        logger.info("the service is stopped; its data stays in %s", service.settings.data_dir)


def wait_for_worker(timeout_s: float) -> bool:
    """True once a worker's heartbeat is in Redis (it has loaded and warmed up its model)."""
    from workers import client

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.list_workers():
            return True
        time.sleep(0.2)
    return False


def restart_child(service: Service, child: Child, *, now: float | None = None) -> bool:
    """Start an exited child again if it may be restarted and has restarts left; False if not."""
    now = time.monotonic() if now is None else now
    child.restarts = [at for at in child.restarts if now - at < RESTART_WINDOW_S]
    if child.command is None or child.env is None or len(child.restarts) >= RESTART_LIMIT:
        return False
    if child.log is not None:
        child.log.close()
    fresh = spawn(child.name, child.command, env=child.env, log_dir=service.settings.data_dir / "logs")
    fresh.restarts = [*child.restarts, now]
    service.children[service.children.index(child)] = fresh
    service.write_record()
    return True


def run_until_stopped(service: Service, *, poll_s: float = 0.5) -> int:
    """Block until SIGINT/SIGTERM (exit 0), restarting a worker or UI that exits on its own; if Redis exits or a
    child has used up its restarts, stop (exit 1). Everything is stopped on the way out."""
    stop_requested: list[int] = []

    def _request_stop(signum: int, _frame: Any) -> None:
        if not stop_requested:
            logger.info(
                "%s: stopping the service",
                "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name,
            )
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        while not stop_requested and status == 0:
            for child in [child for child in service.children if child.process.poll() is not None]:
                code = child.process.returncode
                if restart_child(service, child):
                    logger.warning(
                        "%s exited with status %s; started it again (restart %d of %d in %.0f min)",
                        child.name,
                        code,
                        len(child.restarts) + 1,
                        RESTART_LIMIT,
                        RESTART_WINDOW_S / 60,
                    )
                else:
                    logger.error("%s exited with status %s; stopping the service", child.name, code)
                    status = 1
                    break
            time.sleep(poll_s)
    finally:
        stop_service(service)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
