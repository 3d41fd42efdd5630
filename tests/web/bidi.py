"""A tiny WebDriver BiDi client for driving Debian's ``firefox-esr`` in the web app's tests.

Playwright's own Firefox build cannot be downloaded here and Debian 12 has no
geckodriver, but Firefox itself speaks WebDriver BiDi (W3C; Firefox's remote
agent): started with ``--remote-debugging-port`` it serves a WebSocket at
``ws://127.0.0.1:PORT/session``. This module starts such a Firefox with a
fresh profile that makes no background calls, and sends the few commands the
test needs (``session.new``, ``session.subscribe``, ``browsingContext.*``,
``script.evaluate``) over the ``websockets`` package's synchronous client.

Every wait is on an event: Firefox's "WebDriver BiDi listening on" line for
its start, each command's own response (``browsingContext.navigate`` with
``wait: "complete"`` answers once the page has loaded). Page state the page
offers no event for is polled with a bound (``tests/conftest.py``'s
``wait_until``). Events that arrive meanwhile (``log.entryAdded``,
``network.beforeRequestSent``) are kept in ``events`` for the test to check.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

FIREFOX = Path("/usr/bin/firefox-esr")
# Generous: a cold Firefox start on a loaded 2-core machine takes seconds.
START_S = 60.0
COMMAND_S = 60.0
LISTENING = "WebDriver BiDi listening on "

# A fresh profile's prefs: only 127.0.0.1 is reachable here (and a yard often has no
# internet), so nothing in the background may call out: updates, telemetry, health
# report, captive-portal and connectivity checks, safe browsing lists, Normandy
# studies, remote settings, add-on and plugin updates, geolocation, DNS prefetch and
# speculative connections, DNS over HTTPS, the new-tab page's feeds.
USER_JS = {
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "app.update.enabled": False,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.archive.enabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.policy.dataSubmissionPolicyBypassNotification": True,
    "browser.ping-centre.telemetry": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.trr.mode": 5,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.http.speculative-parallel-limit": 0,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.provider.google.updateURL": "",
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-manager.url": "",
    "geo.provider.network.url": "",
    "browser.region.network.url": "",
    "browser.search.geoip.url": "",
    "browser.search.update": False,
    "identity.fxaccounts.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.page": 0,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "startup.homepage_welcome_url": "",
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.system.topstories": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.feeds.snippets": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.topsites.contile.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "toolkit.startup.max_resumed_crashes": -1,
}


class BiDiError(AssertionError):
    """A BiDi command answered with an error, or no answer came in time."""


class BiDi:
    """One WebDriver BiDi session over one WebSocket; commands answer in order of calls."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.next_id = 0
        # Every event received so far, in order: {"method": ..., "params": ...}.
        self.events: list[dict[str, Any]] = []

    def command(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events read meanwhile are kept."""
        self.next_id += 1
        sent = self.next_id
        self.socket.send(json.dumps({"id": sent, "method": method, "params": params}))
        while True:
            try:
                message = json.loads(self.socket.recv(timeout=COMMAND_S))
            except TimeoutError:
                raise BiDiError(f"{method}: no answer in {COMMAND_S:g} s") from None
            if message.get("type") == "event":
                self.events.append(message)
            elif message.get("id") == sent:
                if message.get("type") == "error":
                    raise BiDiError(f"{method}: {message.get('error')}: "
                                    f"{message.get('message')}")
                return message["result"]

    def wait_event(self, method: str, match: Callable[[dict[str, Any]], bool],
                   since: int = 0, timeout_s: float = COMMAND_S) -> dict[str, Any]:
        """The first ``method`` event from ``events[since:]`` on whose params ``match`` holds,
        reading more from Firefox until it comes (``since``: ``len(events)`` before the
        action that causes it, so an earlier one does not count)."""
        deadline = time.monotonic() + timeout_s
        seen = since
        while True:
            for event in self.events[seen:]:
                if event["method"] == method and match(event["params"]):
                    return event["params"]
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BiDiError(f"no matching {method} event in {timeout_s:g} s")
            try:
                message = json.loads(self.socket.recv(timeout=left))
            except TimeoutError:
                continue
            if message.get("type") == "event":
                self.events.append(message)

    def evaluate(self, context: str, expression: str) -> Any:
        """``expression``'s value in the page (primitives only), awaiting a promise."""
        result = self.command("script.evaluate", expression=expression,
                              target={"context": context}, awaitPromise=True)
        if result["type"] == "exception":
            details = result["exceptionDetails"]
            raise BiDiError(f"{expression!r} threw: {details.get('text')}")
        value = result["result"]
        return value.get("value")

    def screenshot(self, context: str, path: Path) -> Path:
        """The whole document (not only the viewport) as a PNG at ``path``."""
        result = self.command("browsingContext.captureScreenshot", context=context,
                              origin="document")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))
        print(f"screenshot: {path}")
        return path


def _profile(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"user_pref({json.dumps(name)}, {json.dumps(value)});"
             for name, value in USER_JS.items()]
    (directory / "user.js").write_text("\n".join(lines) + "\n")
    return directory


@contextmanager
def firefox(profile: Path) -> Iterator[BiDi]:
    """A headless Debian ``firefox-esr`` with a new profile, and a BiDi session on it.

    Firefox is stopped by its PID when the block ends, whatever happened."""
    env = {**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1", "MOZ_HEADLESS": "1"}
    process = subprocess.Popen(
        [str(FIREFOX), "--headless", "--no-remote", "--remote-debugging-port=0",
         "--profile", str(_profile(profile)), "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    # Port 0: Firefox picks a free one and announces it on stderr once it listens
    # ("WebDriver BiDi listening on ws://127.0.0.1:PORT"); the lines are read on a
    # thread so the wait has a bound (and the pipe never fills up).
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            try:
                line = lines.get(timeout=START_S)
            except queue.Empty:
                raise BiDiError(f"Firefox did not listen in {START_S:g} s: "
                                f"{''.join(output)[-2000:]}") from None
            if line is None:
                raise BiDiError(f"Firefox ended before it listened: {''.join(output)[-2000:]}")
            if line.startswith(LISTENING):
                address = line.removeprefix(LISTENING).strip()
                break
        with connect(f"{address}/session", max_size=None,
                     open_timeout=COMMAND_S) as socket:
            session = BiDi(socket)
            session.command("session.new", capabilities={})
            try:
                yield session
            finally:
                # Firefox is stopped below whatever this answers.
                with suppress(BiDiError, ConnectionClosed, OSError):
                    session.command("session.end")
    finally:
        # Its own process group (start_new_session): the content processes end with it.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
