"""A small Chrome DevTools Protocol client for the tests: headless Chromium driven over
`--remote-debugging-pipe` (no websocket, no extra package).

Chromium reads CDP messages (JSON, each ended by a NUL byte) from its fd 3 and writes
its replies and events, framed the same way, to its fd 4. Every read has a deadline;
`close()` kills Chromium's whole process group (it was started in a session of its
own), so no renderer outlives a test.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


class CdpError(Exception):
    """An error reply, a closed pipe or a deadline passed."""


class Browser:
    """One headless Chromium, one page (a flattened target session)."""

    def __init__(self, user_data_dir: Path, log_path: Path, timeout: float = 30.0,
                 executable: str = CHROMIUM) -> None:
        self.timeout = timeout
        self.events: list[dict] = []
        self._next_id = 0
        self._buffer = b""
        # Parent ends stay close-on-exec; the child gets copies on exactly 3 and 4.
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Above 4, so that putting one on 3 cannot overwrite the other in the child.
        child_in = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def on_fds_3_and_4() -> None:  # runs in the child, before exec
            os.dup2(child_in, 3)  # dup2's copies are inheritable: they survive exec
            os.dup2(child_out, 4)

        self._log = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [
                    executable, "--headless=new", "--no-sandbox", "--disable-gpu",
                    f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                    "--mute-audio", "about:blank",
                ],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                close_fds=False, preexec_fn=on_fds_3_and_4, start_new_session=True,
            )
        finally:
            os.close(child_in)
            os.close(child_out)
        self.session: str | None = None
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            self.session = self.call(
                "Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    # ---- the protocol ---------------------------------------------------------------

    def call(self, method: str, params: dict | None = None, *, session: bool = True,
             timeout: float | None = None) -> dict:
        """Sends one command and returns its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session is not None:
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        while data:
            written = os.write(self._to_chrome, data)
            data = data[written:]
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def _read(self, deadline: float, waiting_for: str) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"no answer to {waiting_for} in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise CdpError(f"Chromium closed its pipe (exit {self.proc.poll()}) while waiting for {waiting_for}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    # ---- what the tests do ------------------------------------------------------------

    def navigate(self, url: str) -> None:
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigating to {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout=self.timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.1) -> Any:
        """Evaluates `expression` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.evaluate(expression)
            if last:
                return last
            time.sleep(interval)
        raise CdpError(f"{expression} still {last!r} after {timeout}s")

    def add_script_on_new_document(self, source: str) -> None:
        self.call("Page.addScriptToEvaluateOnNewDocument", {"source": source})

    def set_viewport(self, width: int, height: int, scale: float = 1, mobile: bool = False) -> None:
        self.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})

    def screenshot(self, path: Path) -> bytes:
        """The whole page as PNG, written to `path`."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        data = base64.b64decode(self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        })["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # Chromium and its renderers
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
