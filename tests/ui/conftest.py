"""Browser fixtures: headless Debian Chromium driven by Playwright against a real service (uvicorn
in a thread, a ``tunekit worker`` process for jobs) on a temporary workspace.

Chromium is the system's (``/usr/bin/chromium``, Debian's package): Playwright's own browser
download cannot run on a closed network. Without it the tests skip with the install command, except
under CI (``$CI`` set), where they fail: ``make test`` installs it when run as root, so CI never skips.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.service.test_service_jobs import JOB_DEFAULTS, stop, tiny_base  # noqa: F401  (tiny_base is a fixture)
from tunekit.artifacts import Workspace
from tunekit.serve.keys import KeyStore
from tunekit.serve.settings import ServeSettings
from tunekit.service.app import create_service_app
from tunekit.service.catalogue import Catalogue

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# without the background-networking flags Chromium's own connections hang on a closed network
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SCREENSHOTS = os.environ.get("TUNEKIT_SCREENSHOTS")  # a folder: the tests save a picture of every page there


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("the browser tests must run in CI, and chromium is missing: `make test` installs it as root "
                        "(apt-get install -y chromium)")
        pytest.skip("headless Chromium is not installed: run `apt-get install -y chromium` (CI installs it and runs these tests)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@dataclass
class Live:
    """The running service: its URL, workspace and keys."""

    url: str
    workspace: Workspace
    keys: dict[str, str]
    state: dict = field(default_factory=dict)  # what one test leaves for the next (the trained job)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_base) -> Iterator[Live]:  # noqa: F811
    """A service with the tiny base in its catalogue, an admin, a fine-tune and an inference key, over uvicorn."""
    import uvicorn

    workspace = Workspace(tmp_path_factory.mktemp("ui") / "ws")
    Catalogue(workspace).add("tiny", str(tiny_base))
    workspace.service.mkdir(parents=True, exist_ok=True)
    (workspace.service / "job_defaults.yaml").write_text(yaml.safe_dump(JOB_DEFAULTS))
    store = KeyStore(workspace.keys_db)
    keys = {scope: store.create(scope, f"{scope} tester")[0] for scope in ("admin", "fine-tune", "inference")}
    settings = ServeSettings(workspace=str(workspace.root), workers=0, rate_limit_per_minute=0, max_new_tokens=16, port=_free_port())
    server = uvicorn.Server(uvicorn.Config(create_service_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="ui-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    live = Live(f"http://127.0.0.1:{settings.port}", workspace, keys)
    yield live
    if "worker" in live.state:  # a tunekit worker a test started
        stop(live.state["worker"])
    server.should_exit = True
    thread.join(timeout=60)


class Tab:
    """A browser tab that records console errors and failed requests (a CSP violation is one), signs in and takes screenshots."""

    def __init__(self, page, live: Live):
        self.page, self.live, self.errors = page, live, []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def sign_in(self, scope: str = "admin", then: str = "/ui/runs") -> None:
        self.page.goto(f"/ui/signin?next={then}")
        self.page.fill("#key", self.live.keys[scope])
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"**{then}")

    def shot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)

    def no_errors(self, allowed: tuple[str, ...] = ()) -> None:
        """No console error, uncaught exception or CSP report so far (``allowed``: expected failed requests)."""
        left = [e for e in self.errors if not any(a in e for a in allowed)]
        assert not left, f"browser console errors: {left}"


@pytest.fixture
def tab(browser, live) -> Iterator[Tab]:
    context = browser.new_context(base_url=live.url, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(30_000)
    yield Tab(context.new_page(), live)
    context.close()
