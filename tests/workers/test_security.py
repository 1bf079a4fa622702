"""Security properties that hold for the whole code base: no pickle anywhere (the code, the queue, checkpoints),
checkpoints loaded with weights_only=True and a code-carrying one refused without running it, and passwords
in REDIS_URL / DATABASE_URL never printed or logged (checked on a real `s2s up` with a password-protected
Redis of the test's own, a second `s2s up` refused, `s2s ask`, and a worker waiting for an unreachable
PostgreSQL whose URL has a password)."""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import torch

from tests.workers.conftest import REPO_ROOT, TINY_MODEL

PACKAGES = [
    "model",
    "storage",
    "workers",
    "flows",
    "supervisor",
    "ui",
    "cli",
    "bench",
    "scripts",
    "settings.py",
]
PICKLING_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
    "jsonpickle",
}
REDIS_PASSWORD = "redis-Secret-4f9a"
DATABASE_PASSWORD = "db-Secret-81c2"


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for name in PACKAGES:
        root = REPO_ROOT / name
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_no_module_imports_a_pickling_library() -> None:
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [
                f"{path.relative_to(REPO_ROOT)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in PICKLING_MODULES
            ]
    assert not found, found


def test_every_torch_load_passes_weights_only_true_and_numpy_never_allows_pickle() -> None:
    loads, unsafe = 0, []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            keywords = {keyword.arg: keyword.value for keyword in node.keywords}
            where = f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
            if node.func.attr == "load" and ast.unparse(node.func.value) == "torch":
                loads += 1
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    unsafe.append(where)
            if "allow_pickle" in keywords and not (
                isinstance(keywords["allow_pickle"], ast.Constant) and keywords["allow_pickle"].value is False
            ):
                unsafe.append(where)
    assert loads >= 2 and not unsafe, unsafe


def test_celery_sends_and_accepts_json_only_and_refuses_a_pickled_message() -> None:
    from kombu.exceptions import ContentDisallowed
    from kombu.serialization import loads

    from settings import Settings
    from workers.celery_app import build_config

    config = build_config(Settings(), "redis://127.0.0.1:6379/0")
    assert (config["task_serializer"], config["result_serializer"]) == ("json", "json")
    assert config["accept_content"] == ["json"] and config["result_accept_content"] == ["json"]
    payload = pickle.dumps(("workers.answer_question", ["id"]))  # what a pickle-speaking producer would send
    with pytest.raises(ContentDisallowed):
        loads(payload, "application/x-python-serialize", "binary", accept=config["accept_content"])


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    from model.inference import ModelSet

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(TINY_MODEL, checkpoint)
    payload = torch.load(checkpoint / "model.pt", map_location="cpu", weights_only=True)
    payload["meta"] = {"note": _RunsCode(tmp_path / "pwned")}
    torch.save(payload, checkpoint / "model.pt")
    with pytest.raises(ValueError, match=r"(?s)not a readable checkpoint.*unsupported GLOBAL posix.mkdir"):
        ModelSet.load(checkpoint, device="cpu")
    assert not (tmp_path / "pwned").exists()


# --- passwords never shown -----------------------------------------------------------------------------------


def test_a_url_is_shown_without_its_password() -> None:
    from workers.service_discovery import shown_url

    assert shown_url(f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/0") == "redis://:***@10.0.0.5:6379/0"
    assert (
        shown_url(f"postgresql+psycopg://s2s:{DATABASE_PASSWORD}@db:5432/s2s")
        == "postgresql+psycopg://s2s:***@db:5432/s2s"
    )
    assert shown_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own that requires REDIS_PASSWORD; its URL, with the password."""
    from supervisor.embedded_redis import free_port, redis_server_binary

    port = free_port()
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--requirepass",
            REDIS_PASSWORD,
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(url, socket_timeout=0.5).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(
        S2S_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(REPO_ROOT),
        S2S_CHECKPOINT=str(TINY_MODEL),
        S2S_DEVICE="cpu",
        S2S_TORCH_THREADS="1",
        S2S_REQUEST_TIMEOUT_S="3",
    )
    env.update(extra)
    return env


def _assert_no_password(text: str, where: str) -> None:
    assert REDIS_PASSWORD not in text and DATABASE_PASSWORD not in text, f"a password is shown in {where}"


@pytest.mark.slow
def test_passwords_in_urls_are_never_printed_or_logged(tmp_path: Path, password_redis: str) -> None:
    env = _env(tmp_path, REDIS_URL=password_redis)
    up = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--no-ui"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    shown = ""
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + 240
        while "press Ctrl-C" not in shown and time.monotonic() < deadline and up.poll() is None:
            shown += up.stdout.readline()
        assert "press Ctrl-C" in shown, shown
        assert "redis: redis://:***@127.0.0.1" in shown, shown
        second = subprocess.run(
            [sys.executable, "-m", "cli.main", "up", "--no-ui"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2 and "already running" in second.stderr, second.stderr
        assert ":***@127.0.0.1" in second.stderr
        _assert_no_password(second.stdout + second.stderr, "a second s2s up's refusal")
        service_file = tmp_path / "data" / "service.json"
        assert service_file.stat().st_mode & 0o077 == 0, (
            "service.json (it holds the Redis URL) is not private"
        )
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        rest, _ = up.communicate(timeout=60)
        shown += rest or ""
    _assert_no_password(shown, "s2s up's output")
    for log in (tmp_path / "data" / "logs").glob("*.log"):
        _assert_no_password(log.read_text(errors="replace"), str(log))

    unreachable = f"postgresql://s2s:{DATABASE_PASSWORD}@127.0.0.1:1/s2s"
    asked = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "ask",
            "--passage",
            "Bob was born in Oslo.",
            "--question",
            "Where?",
        ],
        env=_env(tmp_path, REDIS_URL=password_redis, DATABASE_URL=unreachable),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert asked.returncode == 2, asked.stderr
    _assert_no_password(asked.stdout + asked.stderr, "s2s ask")

    # A worker that cannot reach its database says so, again and again, while it waits: never with the URL.
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker"],
        cwd=REPO_ROOT,
        env=_env(tmp_path, REDIS_URL=password_redis, DATABASE_URL=unreachable),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while log.read_text(errors="replace").count("does not answer") < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert text.count("does not answer") >= 2, text[-3000:]
    _assert_no_password(text, "the worker's log")
