"""The console in a real browser: a real `athanor serve` app (uvicorn thread, free 127.0.0.1 port, an API key)
and headless Chromium from the system (Debian's `chromium`) driven by Playwright for Python.

Fixtures: `console_server` (module: the server, its ATHANOR_HOME, the key), `browser` (module), `console`
(per test: a fresh browser context at 1280x900 whose page fails the test on any JavaScript error or console
error; `console.open(path)` enters the key when the page asks). Screenshots go to $ATHANOR_SCREENSHOTS when set
(`make screenshots`), else into the test's temp dir. Skipped, with the reason, only when no Chromium exists.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import make_store, small_engine_config, start_server

API_KEY = "console-test-key"
NAV_LABELS = ["Chat", "Traces", "Training", "Evals", "Models", "Workflows", "Knowledge"]
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    """$ATHANOR_CHROMIUM, else the first Chromium on PATH (Debian: /usr/bin/chromium)."""
    explicit = os.environ.get("ATHANOR_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)


@dataclass
class ConsoleServer:
    url: str
    key: str
    home: Path
    app: object

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def console_server(tmp_path_factory, tiny_hf_dir):
    from athanor.ops.tracing_setup import TraceSettings
    from athanor.serve.app import create_app

    home = tmp_path_factory.mktemp("console_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATHANOR_HOME", str(home))
        app = create_app(store=make_store(home, tiny_hf_dir), engine_config=small_engine_config(), api_key=API_KEY,
                         trace=TraceSettings(path=home / "traces.sqlite"))
        with start_server(app) as s:
            yield ConsoleServer(s.url, API_KEY, home, app)


@pytest.fixture(scope="module")  # Playwright's sync API holds an event loop on the main thread while it runs:
def browser():                    # stop it after each module, or later tests' asyncio.run() would fail
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium, or set ATHANOR_CHROMIUM): browser tests skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=binary, headless=True)
        yield b
        b.close()


@dataclass
class Console:
    """One browser page on the console; `errors` collects every page error and console error."""

    page: object
    server: ConsoleServer
    shots: Path
    errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> object:
        """Go to `path`, enter the API key if the page asks for it, wait until the page has started."""
        self.page.goto(self.server.url + path)
        dialog = self.page.locator("#key-dialog")
        if dialog.is_visible():
            self.page.fill("#api-key", self.server.key)
            self.page.click("#key-save")
            dialog.wait_for(state="hidden")
        return self.page

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    def check(self) -> None:
        assert not self.errors, "the page had JavaScript or console errors:\n" + "\n".join(self.errors)


@pytest.fixture
def console(console_server, browser, monkeypatch, tmp_path):
    monkeypatch.setenv("ATHANOR_HOME", str(console_server.home))  # the server's routes read it per request
    shots = Path(os.environ.get("ATHANOR_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)  # a first chat loads the model on 2 shared cores
    page = context.new_page()
    c = Console(page, console_server, shots)
    page.on("pageerror", lambda e: c.errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: c.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    yield c
    context.close()
    c.check()
