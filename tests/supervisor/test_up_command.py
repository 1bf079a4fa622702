"""`s2s up` with REDIS_URL unset: private Redis, worker, answers, and nothing left running after Ctrl-C (it says what
it stopped) or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.workers.conftest import PASSAGE, QUESTION, REPO_ROOT, TINY_MODEL
from workers.service_discovery import pid_alive

pytestmark = pytest.mark.slow


def _up_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(
        S2S_DATA_DIR=str(tmp_path),
        S2S_CHECKPOINT=str(TINY_MODEL),
        S2S_TORCH_THREADS="1",
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


def _start_up(env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    """`s2s up --no-ui`, returned once it says it is ready, with the lines it printed so far (and later)."""
    up = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--no-ui"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    # A reader thread, because `s2s up` may print several lines at once and a buffered pipe then holds
    # the rest where select() cannot see them.
    threading.Thread(target=lambda: lines.extend(up.stdout or []), daemon=True).start()
    deadline = time.monotonic() + 90
    while "press Ctrl-C" not in "".join(lines):
        if time.monotonic() > deadline or up.poll() is not None:
            os.killpg(up.pid, signal.SIGKILL)
            raise AssertionError("".join(lines))
        time.sleep(0.2)
    return up, lines


def _ask(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    ask = [sys.executable, "-m", "cli.main", "ask", "--passage", PASSAGE, "--question", QUESTION]
    return subprocess.run(ask, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def test_up_serves_and_stops_without_stray_processes(tmp_path: Path) -> None:
    env = _up_env(tmp_path)
    up, lines = _start_up(env)
    try:
        assert "worker: ready" in "".join(lines)
        info = json.loads((tmp_path / "service.json").read_text())
        assert info["redis_url"].startswith("redis://127.0.0.1:")
        children = list(info["children"].values())

        done = _ask(env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "Oslo"

        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=60) == 0
        assert not (tmp_path / "service.json").exists()
        assert [pid for pid in children if pid_alive(pid)] == []
        said = "".join(lines)  # what it stopped, in order
        stops = [
            said.index(f"stopped {name} (pid {info['children'][key]})")
            for key, name in (("worker", "the worker"), ("redis", "the private Redis"))
        ]
        assert "Ctrl-C: stopping the service" in said and stops == sorted(stops)
        assert f"the service is stopped; its data stays in {tmp_path}" in said
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def test_a_killed_worker_is_started_again_and_answers(tmp_path: Path) -> None:
    env = _up_env(tmp_path)
    up, lines = _start_up(env)
    children: list[int] = []
    try:
        first_worker = json.loads((tmp_path / "service.json").read_text())["children"]["worker"]
        os.kill(first_worker, signal.SIGKILL)
        done = _ask(env, timeout=120)  # queued while no worker runs; the restarted one answers it
        assert done.returncode == 0, done.stderr + "".join(lines)
        assert done.stdout.splitlines()[0] == "Oslo"
        children = list(json.loads((tmp_path / "service.json").read_text())["children"].values())
        assert first_worker not in children and up.poll() is None
        assert "worker exited with status -9; started it again" in "".join(lines)
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        assert [pid for pid in children if pid_alive(pid)] == []
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def test_killing_up_with_sigkill_takes_its_children_down_too(tmp_path: Path) -> None:
    env = _up_env(tmp_path)
    up = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--no-ui"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while not children:
            assert time.monotonic() < deadline and up.poll() is None
            service_file = tmp_path / "service.json"
            if service_file.exists():
                info = json.loads(service_file.read_text())
                if len(info.get("children", {})) >= 2:  # redis and the worker
                    children = list(info["children"].values())
            time.sleep(0.3)
        up.kill()
        up.wait()
        deadline = time.monotonic() + 30
        while [pid for pid in children if pid_alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.3)
        assert [pid for pid in children if pid_alive(pid)] == []
    finally:
        for pid in children:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_commands_without_a_service_say_how_to_start_one(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(S2S_DATA_DIR=str(tmp_path), PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "ask", "--passage", "p", "--question", "q"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no service running" in done.stderr and "s2s up" in done.stderr


def test_a_second_up_on_the_same_data_dir_refuses_at_once_and_leaves_the_first_alone(tmp_path: Path) -> None:
    env = _up_env(tmp_path)
    up, _lines = _start_up(env)
    try:
        record = (tmp_path / "service.json").read_bytes()
        redis_starts = (tmp_path / "logs" / "redis.log").read_text().count("Ready to accept connections")
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "cli.main", "up", "--no-ui"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert time.monotonic() - started < 30
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stdout == "" and "Traceback" not in second.stderr
        message = second.stderr.strip().splitlines()
        assert len(message) == 1 and "already running" in message[0] and f"pid {up.pid}" in message[0]
        assert json.loads(record)["redis_url"] in message[0]
        assert (tmp_path / "service.json").read_bytes() == record
        # no second Redis on its files
        assert (tmp_path / "logs" / "redis.log").read_text().count(
            "Ready to accept connections"
        ) == redis_starts
        done = _ask(env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "Oslo"
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)


@pytest.mark.skipif(not (REPO_ROOT / "ui" / "app.py").exists(), reason="no UI to start")
def test_up_with_the_ui_port_in_use_fails_at_once_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {**_up_env(tmp_path), "S2S_UI_HOST": "127.0.0.1", "S2S_UI_PORT": str(port)}
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "up"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"the UI port 127.0.0.1:{port} is already in use" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "service.json").exists()
    assert not (tmp_path / "logs" / "redis.log").exists()
