"""What the browser tests share: the service they drive (a real Redis, a real worker with the tiny checkpoint, the
UI on a free port), headless Chromium (Debian's /usr/bin/chromium through Playwright), and the few page actions
every test uses. Screenshots go to test-artifacts/screenshots/ (not committed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage import migrate
from supervisor.embedded_redis import free_port
from tests.workers.conftest import REPO_ROOT
from tests.workers.service_fixtures import redis_for_tests, service_env, start_worker, stop_worker

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
TIMEOUT_MS = 30_000
CHROMIUM_MISSING = "needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"


class Service:
    """The worker and UI processes; `restart()` stops both and starts them again on the same database."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env, self.tmp = env, tmp
        self.url = f"http://127.0.0.1:{env['S2S_UI_PORT']}/"
        self.worker: subprocess.Popen[bytes] | None = None
        self.ui: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.worker = start_worker(self.env, self.tmp / "worker.log")
        self.ui = subprocess.Popen(
            [sys.executable, "-m", "ui.app"],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=(self.tmp / "ui.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=1)
                return
            except OSError:
                if self.ui.poll() is not None:
                    raise RuntimeError((self.tmp / "ui.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        raise RuntimeError("the UI did not start in 60 s")

    def stop(self) -> None:
        if self.ui is not None:
            os.killpg(self.ui.pid, signal.SIGTERM)
            self.ui.wait(timeout=20)
        if self.worker is not None:
            stop_worker(self.worker)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running_service(tmp: Path, **extra_env: str) -> Iterator[Service]:
    """The whole service on a fresh SQLite file in `tmp`, stopped afterwards."""
    database_url = f"sqlite:///{tmp / 's2s.sqlite3'}"
    migrate.upgrade(database_url)
    with redis_for_tests(tmp) as redis_url:
        env = service_env(
            redis_url,
            database_url,
            S2S_DATA_DIR=str(tmp / "data"),
            S2S_UI_PORT=str(free_port()),
            S2S_REQUEST_TIMEOUT_S="30",
            GRADIO_ANALYTICS_ENABLED="False",
            **extra_env,
        )
        running = Service(env, tmp)
        running.start()
        try:
            yield running
        finally:
            running.stop()


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a playwright Browser); contexts opened on it close with it."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, service: Service, *, locale: str = "en-US", width: int = 1280) -> Any:
    """A page of the UI in a fresh browser context (so a new owner key), loaded and ready."""
    context = browser.new_context(viewport={"width": width, "height": 1000}, locale=locale)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    open_page(page, service)
    return page


def open_page(page: Any, service: Service) -> None:
    page.goto(service.url)
    page.locator("#chat-input textarea").wait_for()
    page.wait_for_function("() => !document.querySelector('#conversation-list .pending')")
    page.wait_for_timeout(1000)  # the load event gives a new browser its owner key


def wait_text(page: Any, selector: str, text: str) -> None:
    """Wait until a visible element inside `selector` shows `text` (tables keep hidden copies of their cells)."""
    page.locator(selector).get_by_text(text).locator("visible=true").first.wait_for()


def bot_messages(page: Any) -> list[str]:
    return [text.strip() for text in page.locator('#chatbot [data-testid="bot"]').all_inner_texts()]


def user_messages(page: Any) -> list[str]:
    return [text.strip() for text in page.locator('#chatbot [data-testid="user"]').all_inner_texts()]


def send(page: Any, text: str) -> None:
    """Type `text` into the message box, press Enter, and wait until its reply is no longer pending."""
    count = page.locator('#chatbot [data-testid="user"]').count()
    box = page.locator("#chat-input textarea")
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(
        "([n, pending]) => { const bots = document.querySelectorAll('#chatbot [data-testid=\"bot\"]');"
        " return bots.length >= n && !bots[bots.length - 1].innerText.includes(pending); }",
        arg=[count + 1, "waiting for the model"],
    )
