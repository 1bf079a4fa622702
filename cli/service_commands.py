"""`s2s up | worker | ask | chat | batch`: run the service and use it from a terminal.

Every command finds Redis with workers.service_discovery.resolve_redis_url (REDIS_URL, else the service.json
of a live `s2s up` in S2S_DATA_DIR) and the database from DATABASE_URL (else the SQLite file in S2S_DATA_DIR).
ask, chat and batch run the request flows in flows/ (the ones the UI runs): they store the rows, enqueue them
or mark them failed when that raises, and ask and chat wait by reading the answer's row. A command that
enqueues checks that it can reach Redis before it stores anything, so a missing service leaves no row behind
that no worker would ever see, and a request the broker then refuses is failed, not left pending; either way
the command prints one line and exits 2. Imports of Celery, SQLAlchemy and torch happen inside the handlers.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

CLI_OWNER = "cli"


def register(subparsers: Any) -> None:
    up = subparsers.add_parser(
        "up", help="run Redis (if REDIS_URL is unset), a worker and the UI on this machine"
    )
    up.add_argument("--no-ui", action="store_true", help="do not start the UI")
    up.set_defaults(handler=_guarded(_up))

    worker = subparsers.add_parser("worker", help="run one worker against REDIS_URL and DATABASE_URL")
    worker.add_argument("--queues", default="interactive,batch", help="comma-separated: interactive, batch")
    worker.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="task threads (default: 2 x S2S_MICROBATCH_MAX_SIZE); one model per process",
    )
    worker.add_argument(
        "--pool",
        choices=["threads", "solo"],
        default="threads",
        help="threads (micro-batching) or solo (one request at a time)",
    )
    worker.add_argument("--name", default=None, help="Celery node name (default: s2s-<pid>@<host>)")
    worker.add_argument(
        "--check",
        action="store_true",
        help="do not start one: exit 0 if a worker of this host (or --name) is ready, else 1",
    )
    worker.set_defaults(handler=_guarded(_worker))

    ask = subparsers.add_parser("ask", help="answer one question about a passage through the queue")
    ask.add_argument("--passage", required=True, help="the passage text")
    ask.add_argument("--question", required=True, help="the question")
    ask.add_argument(
        "--json", action="store_true", help="print the full outcome as JSON after the answer line"
    )
    ask.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait (default S2S_REQUEST_TIMEOUT_S)"
    )
    ask.set_defaults(handler=_guarded(_ask))

    chat = subparsers.add_parser("chat", help="chat in the terminal (stored as a conversation); /quit ends")
    chat.add_argument("--timeout", type=float, default=None, help="seconds to wait per reply")
    chat.set_defaults(handler=_guarded(_chat))

    batch = subparsers.add_parser("batch", help="batch QA jobs: submit, status, results, cancel")
    commands = batch.add_subparsers(dest="batch_command", required=True)
    submit = commands.add_parser("submit", help="submit a JSONL, CSV or SQuAD JSON file; prints the job id")
    submit.add_argument("file", type=Path)
    submit.set_defaults(handler=_guarded(_batch_submit))
    status = commands.add_parser("status", help="state, counts and ETA of a job")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_guarded(_batch_status))
    results = commands.add_parser("results", help="export a job's results")
    results.add_argument("job_id")
    results.add_argument("--format", choices=["jsonl", "csv", "squad"], default="jsonl")
    results.add_argument("--output", type=Path, default=None, help="write to this file instead of stdout")
    results.set_defaults(handler=_guarded(_batch_results))
    cancel = commands.add_parser("cancel", help="cancel a job; answered items keep their answers")
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=_guarded(_batch_cancel))


def _guarded(handler: Any) -> Any:
    """Turn the errors a user can fix, and an unreachable Redis or database, into one clear line on stderr and
    exit status 2."""

    def run(args: argparse.Namespace) -> int:
        import redis
        from kombu.exceptions import OperationalError as BrokerError
        from sqlalchemy.exc import DBAPIError

        from flows.uploads import BatchFileError
        from storage.errors import StorageError
        from supervisor.service import PortInUse
        from supervisor.service_lock import ServiceAlreadyRunning
        from workers.client import NoWorker, ResultTimeout
        from workers.service_discovery import ServiceNotRunning

        expected = (
            ServiceNotRunning,
            ServiceAlreadyRunning,
            PortInUse,
            NoWorker,
            ResultTimeout,
            BatchFileError,
            StorageError,
            OSError,
        )
        try:
            return int(handler(args) or 0)
        except expected as error:
            message = str(error)
        except (redis.RedisError, BrokerError) as error:
            message = f"Redis is not answering ({type(error).__name__}: {error}); is the service up?"
        except DBAPIError as error:  # locked, unreachable or refusing: not the traceback of a bug
            message = f"the database is not answering ({type(error.orig).__name__}: {error.orig})"
        print(f"s2s {args.command}: {_one_line(message)}", file=sys.stderr)
        return 2

    return run


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _engine() -> Any:
    """This command's engine, on a schema brought up to date. The flows ask for it only after the checks that
    need no database, so a command refused for want of a service creates no database file."""
    from settings import get_settings

    return _engine_for(get_settings().resolved_database_url)


@functools.lru_cache(maxsize=4)
def _engine_for(url: str) -> Any:
    from storage import migrate
    from storage.db import make_engine

    migrate.ensure_schema(url)
    return make_engine(url)


def _timeout(args: argparse.Namespace) -> float:
    from settings import get_settings

    return float(args.timeout or get_settings().request_timeout_s)


# --- up and worker ----------------------------------------------------------------------------------------


def _up(args: argparse.Namespace) -> int:
    import logging

    from settings import get_settings
    from supervisor import service as supervisor

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = get_settings()
    service = supervisor.start_service(settings, with_ui=not args.no_ui)
    os.environ["REDIS_URL"] = service.redis_url  # for the readiness check below, in this process
    get_settings.cache_clear()
    ready = supervisor.wait_for_worker(timeout_s=120.0)
    from workers.service_discovery import shown_url

    print(f"redis: {shown_url(service.redis_url)}")
    print(f"data:  {settings.data_dir}")
    print(f"worker: {'ready' if ready else 'still starting (see logs/worker.log)'}")
    if service.ui_url:
        print(f"UI: {service.ui_url}")
    else:
        print("UI: not started (ui/app.py is not there yet, or --no-ui); `s2s ask`/`s2s chat` work")
    print("press Ctrl-C to stop", flush=True)
    return supervisor.run_until_stopped(service)


def _worker(args: argparse.Namespace) -> int:
    if args.check:
        return _worker_check(args)
    from settings import get_settings
    from workers import tasks  # registers the tasks and the worker lifecycle hooks
    from workers.celery_app import QUEUES, app

    settings = get_settings()
    queues = [name.strip() for name in args.queues.split(",") if name.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        print(f"s2s worker: unknown queue(s) {unknown}; choose from {', '.join(QUEUES)}", file=sys.stderr)
        return 2
    concurrency = 1 if args.pool == "solo" else args.concurrency or 2 * settings.microbatch_max_size
    argv = [
        "worker",
        "--pool",
        args.pool,
        "--concurrency",
        str(concurrency),
        "--queues",
        ",".join(queues),
        "--hostname",
        args.name or f"s2s-{os.getpid()}@%h",
        "--loglevel",
        settings.log_level,
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return tasks.worker_exit_code()  # worker_main drops Celery's (1 after an unrecoverable error)


def _worker_check(args: argparse.Namespace) -> int:
    """Readiness for container healthchecks: a live heartbeat of a worker on this host (or the one named).

    A worker writes its heartbeat only after its model is loaded and warmed up, so a fresh one means ready.
    """
    import socket

    import redis
    from celery.utils.nodenames import host_format

    from workers.client import list_workers
    from workers.service_discovery import pid_alive

    host = socket.gethostname()
    wanted = host_format(args.name) if args.name else None
    try:
        records = list_workers()
    except redis.RedisError as error:
        print(f"s2s worker --check: Redis not reachable: {error}", file=sys.stderr)
        return 1
    for record in records:
        if wanted is not None:
            mine = record.get("hostname") == wanted
        else:
            mine = record.get("host") == host and pid_alive(int(record.get("pid") or 0))
        if mine:
            print(
                f"ready: {record.get('hostname')} on {record.get('device')}, "
                f"queues {','.join(record.get('queues', []))}"
            )
            return 0
    print(f"s2s worker --check: no ready worker {wanted or 'on ' + host}", file=sys.stderr)
    return 1


# --- ask and chat -----------------------------------------------------------------------------------------
# The flows (store, then enqueue or mark the request failed) are flows.questions, flows.chat and flows.batch,
# the same the UI runs; these commands parse arguments, call them and print.


def _ask(args: argparse.Namespace) -> int:
    from flows import questions

    _asked, outcome = questions.ask_and_wait(
        _engine, CLI_OWNER, args.passage, args.question, timeout=_timeout(args)
    )
    if outcome["status"] != "done":
        print(f"s2s ask: {outcome.get('error') or outcome['status']}", file=sys.stderr)
        return 1
    print(outcome["answer"])
    if args.json:
        print(json.dumps(outcome, ensure_ascii=False))
    return 0


def _chat(args: argparse.Namespace) -> int:
    from flows import chat
    from storage.errors import EmptyInput, InputTooLong, OverLimit, UnstorableText

    conversation_id = chat.start(_engine, CLI_OWNER, title="terminal chat")
    print(f"conversation {conversation_id}; /quit or Ctrl-D ends", file=sys.stderr)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if text in {"/quit", "/exit"}:
            return 0
        if not text:
            continue
        try:
            _sent, outcome = chat.send_and_wait(
                _engine, CLI_OWNER, conversation_id, text, timeout=_timeout(args)
            )
        except (
            EmptyInput,
            InputTooLong,
            UnstorableText,
            OverLimit,
        ) as error:  # this message only; the chat goes on
            print(f"s2s chat: {error}", file=sys.stderr, flush=True)
            continue
        if outcome["status"] == "done":
            print(f"bot> {outcome['text']}", flush=True)
        else:
            print(f"bot! {outcome.get('error') or outcome['status']}", flush=True)


# --- batch ------------------------------------------------------------------------------------------------


def _batch_submit(args: argparse.Namespace) -> int:
    from flows import batch

    parsed = batch.parse_upload(batch.read_upload(args.file), args.file.name)
    if not parsed.items:  # nothing to run: fail, and store nothing
        print(
            f"s2s batch: {args.file} has no valid record ({len(parsed.errors)} bad record(s)); nothing submitted",
            file=sys.stderr,
        )
        _print_bad_records(parsed.errors)
        return 2
    job = batch.submit(_engine, CLI_OWNER, parsed, args.file.name)
    print(job.job_id)
    print(f"{job.items} item(s) queued ({job.format}), {len(job.errors)} bad record(s)", file=sys.stderr)
    _print_bad_records(job.errors)
    if not job.worker_online:
        print("note: no worker consumes the batch queue yet; the job waits for one", file=sys.stderr)
    return 0


def _print_bad_records(errors: list[dict[str, Any]], *, shown: int = 20) -> None:
    for error in errors[:shown]:
        print(f"  line {error['line']}: {_one_line(str(error['reason']))}", file=sys.stderr)
    if len(errors) > shown:
        print(f"  ... and {len(errors) - shown} more", file=sys.stderr)


STATUS_LINES = ("total", "done", "failed", "pending", "cancelled", "bad_records", "eta_s")


def _batch_status(args: argparse.Namespace) -> int:
    from flows import batch

    report = batch.status(_engine, CLI_OWNER, args.job_id)
    if args.json:
        print(json.dumps(report))
        return 0
    print(report["state"])
    for key in STATUS_LINES:
        print(f"{key}: {report[key]}")
    if report["error"]:
        print(f"error: {report['error']}")
    return 0


def _batch_results(args: argparse.Namespace) -> int:
    from flows import batch, exports

    text = exports.render(batch.results(_engine, CLI_OWNER, args.job_id), args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


def _batch_cancel(args: argparse.Namespace) -> int:
    from flows import batch

    cancelled = batch.cancel(_engine, CLI_OWNER, args.job_id)
    print("cancelled" if cancelled else "already finished")
    return 0
