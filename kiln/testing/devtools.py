"""Drive a real headless Chromium through the DevTools protocol, for tests of pages with script.

Chromium runs with ``--remote-debugging-pipe``: commands and events are JSON messages ended by
a NUL byte on file descriptors 3 (to Chromium) and 4 (from it), so no port is opened and no
WebSocket library is needed. A test opens a page, waits for a condition evaluated in it,
drags the mouse, reads the requests the page made and the errors it logged, and takes
screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from kiln.testing.chromium import CHROMIUM_FLAGS, chromium


class DevToolsError(RuntimeError):
    pass


@dataclass
class Page:
    """One tab, attached to by a flat session."""

    browser: Browser
    session: str
    requests: list[str] = field(default_factory=list)  # URLs requested, in order
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, CSP reports

    def call(self, method: str, **params: object) -> dict:
        return self.browser.call(method, params, session=self.session)

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression (promises awaited); raises on an exception."""
        answer = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in answer:
            raise DevToolsError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> object:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise DevToolsError(f"still false after {timeout} s: {expression}")
            self.browser.pump(0.1)

    def drag(self, x1: float, y1: float, x2: float, y2: float, steps: int = 8) -> None:
        """Press the left button at (x1, y1), move to (x2, y2), release: a user's drag."""
        mouse = "Input.dispatchMouseEvent"
        self.call(mouse, type="mouseMoved", x=x1, y=y1)
        self.call(mouse, type="mousePressed", x=x1, y=y1, button="left", buttons=1, clickCount=1)
        for step in range(1, steps + 1):
            x = x1 + (x2 - x1) * step / steps
            y = y1 + (y2 - y1) * step / steps
            self.call(mouse, type="mouseMoved", x=x, y=y, button="left", buttons=1)
        self.call(mouse, type="mouseReleased", x=x2, y=y2, button="left", buttons=0, clickCount=1)

    def screenshot(self, path: str) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        with open(path, "wb") as image:
            image.write(base64.b64decode(data["data"]))

    def _event(self, method: str, params: dict) -> None:
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(str(details.get("exception", {}).get("description") or details))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(arg.get("value", "")) for arg in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"])


class Browser:
    """A headless Chromium with a fresh profile; use as a context manager."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self._profile = tempfile.TemporaryDirectory()
        to_chromium, self._writer = os.pipe()
        self._reader, from_chromium = os.pipe()

        def descriptors_3_and_4() -> None:  # in the child, before exec
            # Out of the way first, in case a pipe end already is descriptor 3 or 4.
            high_in = fcntl.fcntl(to_chromium, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(from_chromium, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)  # inheritable: Python's other descriptors are not
            os.dup2(high_out, 4)

        flags = [flag for flag in CHROMIUM_FLAGS if not flag.startswith("--window-size")]
        self.process = subprocess.Popen(
            [
                chromium(),
                *flags,
                f"--window-size={width},{height}",
                f"--user-data-dir={self._profile.name}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=descriptors_3_and_4,
            close_fds=False,  # closing would take 3 and 4 too; the rest is close-on-exec
        )
        os.close(to_chromium)
        os.close(from_chromium)
        self._buffer = b""
        self._next_id = 0
        self._answers: dict[int, dict] = {}
        self._pages: dict[str, Page] = {}
        self.size = (width, height)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(DevToolsError, OSError):  # it may be gone already
            self.call("Browser.close", {}, timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._writer)
        os.close(self._reader)
        self._profile.cleanup()

    def open(self, url: str, headers: dict[str, str] | None = None) -> Page:
        """A new tab loading ``url`` (after ``headers`` are set for every request it makes)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, session["sessionId"])
        self._pages[page.session] = page
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.call(f"{domain}.enable")
        width, height = self.size
        page.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        if headers:
            page.call("Network.setExtraHTTPHeaders", headers=headers)
        page.call("Page.navigate", url=url)
        page.wait_for("document.readyState === 'complete'")
        return page

    def call(
        self, method: str, params: dict, session: str | None = None, timeout: float = 30.0
    ) -> dict:
        self._next_id += 1
        number = self._next_id
        message: dict[str, object] = {"id": number, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._writer, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while number not in self._answers:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DevToolsError(f"no answer to {method} within {timeout} s")
            self.pump(left)
        answer = self._answers.pop(number)
        if "error" in answer:
            raise DevToolsError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def pump(self, timeout: float) -> None:
        """Read what Chromium sent within ``timeout`` seconds: answers and events."""
        ready, _, _ = select.select([self._reader], [], [], timeout)
        if not ready:
            return
        data = os.read(self._reader, 1 << 20)
        if not data:
            raise DevToolsError(f"Chromium exited ({self.process.poll()})")
        self._buffer += data
        *messages, self._buffer = self._buffer.split(b"\0")
        for raw in messages:
            message = json.loads(raw)
            if "id" in message:
                self._answers[message["id"]] = message
            elif (page := self._pages.get(message.get("sessionId", ""))) is not None:
                page._event(message["method"], message.get("params", {}))
