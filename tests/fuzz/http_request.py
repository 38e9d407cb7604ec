"""Fuzz target: raw bytes on a REST connection -> what the server answers.

In this process, on a thread of its own, the real REST stack listens on 127.0.0.1: a
uvloop loop, `HttpProtocol` over httptools, `RestApi`, `Api` and a `Manager` serving
half_plus_two (exported here with TensorFlow; signatures predict, classify and
regress), with the server's timeout sweep, CORS on, and small limits (64 KB bodies, 8 KB
of headers) so that the limits' answers are reachable. Each input is sent on a fresh TCP
connection, whose write side is then shut down; the answer is read until the server
closes (2 s at most). It must be nothing, or a sequence of well-formed HTTP/1.1
responses: a status line, "Name: value" headers with one Content-Length, a body of that
length (none for HEAD), a JSON {"error": "..."} body for every status but 200, no 5xx,
nothing after "Connection: close"; and the server must close the connection after the
client's FIN (no hang). A connection the server resets may end in the middle of an
answer. The loop's exception handler and the edgeserve loggers must report no error,
and every 64 inputs the server must still answer a valid predict on a new connection.

    python -m tests.fuzz.http_request [libFuzzer args] NEW_CORPUS_DIR tests/fuzz/corpus/http_request

EDGESERVE_FUZZ_MODEL_DIR: a half_plus_two base path to serve instead of the one exported
(once, then reused) to $TMPDIR/edgeserve-fuzz-half_plus_two-<uid>.
"""
from __future__ import annotations

import asyncio
import atexit
import http.client
import json
import logging
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_common  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow  # noqa: E402,F401 - before the instrumented imports: TF itself is not fuzzed
import uvloop  # noqa: E402

with fuzz_common.instrumented(__name__):
    from edgeserve.api import Api
    from edgeserve.example_model import export_half_plus_two
    from edgeserve.manager import Manager
    from edgeserve.rest_api import HttpProtocol, Limits, RestApi
    from edgeserve.runtimes.savedmodel import SavedModelLoader
    from edgeserve.sources import AspiredVersion, fingerprint

MODEL = "half_plus_two"
READ_SECONDS = 2.0  # the server must have closed by then
HEALTH_EVERY = 64
LIMITS = Limits(max_request_bytes=64 * 1024, max_header_bytes=8 * 1024, request_timeout=2.0,
                idle_timeout=5.0, max_connections=256)
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\x21-\x7e][\x20-\x7e]*")
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class ServerThread:
    """The REST stack on its own uvloop loop and thread; `errors` collects what the
    loop's exception handler and the edgeserve loggers report."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        base = os.environ.get("EDGESERVE_FUZZ_MODEL_DIR") or _exported_model()
        self.version_path = os.path.join(base, sorted(os.listdir(base))[-1])
        self._executor = ThreadPoolExecutor(2, "fuzz-run")
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._failure: BaseException | None = None
        self._handler = _ErrorRecorder(self.errors)
        self._handler.setLevel(logging.ERROR)
        logging.getLogger("edgeserve").addHandler(self._handler)
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(120):
            raise RuntimeError("the REST server did not start in 120 s")
        if self._failure is not None:
            raise RuntimeError("the REST server failed to start") from self._failure
        self.checks = 0

    def _run(self) -> None:
        loop = self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self._on_loop_error)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # pragma: no cover - reported to the starting thread
            self._failure = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        executor = self._executor
        manager = Manager(
            lambda name, aspired: SavedModelLoader(aspired.path, warmup=False),
            load_executor=executor, unload_executor=executor,
        )
        manager.set_aspired_versions(
            MODEL, [AspiredVersion(int(os.path.basename(self.version_path)), self.version_path,
                                   fingerprint(self.version_path))])
        await manager.wait_until_settled()
        api = Api(manager, executor, inline_threshold_seconds=0.001)
        rest = RestApi(api, limits=LIMITS, enable_cors=True, run_timeout_ms=5000)
        connections: set[HttpProtocol] = set()
        listener = await asyncio.get_running_loop().create_server(
            lambda: HttpProtocol(rest, connections), "127.0.0.1", 0, backlog=128)
        self.port = listener.sockets[0].getsockname()[1]
        sweep = asyncio.get_running_loop().create_task(self._sweep(connections))
        self._ready.set()
        await self._stopping.wait()
        sweep.cancel()
        listener.close()
        for conn in list(connections):
            conn.drain()
        await manager.stop()

    @staticmethod
    async def _sweep(connections: set) -> None:
        # server.Server._sweep: slow and idle connections, twice a second.
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for conn in list(connections):
                conn.check_timeouts(now)

    def _on_loop_error(self, loop, context) -> None:
        exception = context.get("exception")
        self.errors.append(f"event loop: {context.get('message')}: {exception!r}")

    def raise_errors(self) -> None:
        if self.errors:
            found, self.errors[:] = list(self.errors), []
            raise AssertionError("the server reported: " + "\n".join(found))

    def health_check(self) -> None:
        """A valid predict on a new keep-alive connection gets TF Serving's answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", f"/v1/models/{MODEL}:predict", body=b'{"instances": [[1.0], [2.0], [5.0]]}')
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, (response.status, body)
            assert json.loads(body) == {"predictions": [[2.5], [3.0], [4.5]]}, body
            conn.request("GET", f"/v1/models/{MODEL}")
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200 and b'"AVAILABLE"' in body, (response.status, body)
        finally:
            conn.close()

    def stop(self) -> None:
        if self.loop is not None and self._stopping is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(30)
        self._executor.shutdown(wait=False, cancel_futures=True)
        logging.getLogger("edgeserve").removeHandler(self._handler)


def _exported_model() -> str:
    """half_plus_two exported once into the temp folder and reused by later runs (libFuzzer
    ends the process without Python's clean-up, so a folder per run would pile up)."""
    base = os.path.join(tempfile.gettempdir(), f"edgeserve-fuzz-{MODEL}-{os.getuid()}")
    if not os.path.exists(os.path.join(base, "1", "saved_model.pb")):
        staging = tempfile.mkdtemp(prefix="edgeserve-fuzz-export-")
        try:
            export_half_plus_two(staging, 1)
            shutil.rmtree(base, ignore_errors=True)
            try:
                os.rename(staging, base)  # whole or not at all, if two runs export at once
            except OSError:
                if not os.path.exists(os.path.join(base, "1", "saved_model.pb")):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return base


class _ErrorRecorder(logging.Handler):
    def __init__(self, errors: list[str]) -> None:
        super().__init__()
        self._errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self._errors.append(f"log {record.name} {record.levelname}: {text}")


_server: ServerThread | None = None


def server() -> ServerThread:
    global _server
    if _server is None:
        _server = ServerThread()
        atexit.register(_server.stop)
    return _server


def stop_server() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None


# ---------------------------------------------------------------- one exchange


def exchange(port: int, data: bytes) -> tuple[bytes, str]:
    """Sends `data` on a new connection, shuts down the write side, reads until the
    server closes. Returns (bytes read, "eof" | "reset" | "timeout")."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # A source address of its own each time (all of 127/8 is loopback), so that
        # thousands of closed connections a second never run out of ports in TIME_WAIT.
        sock.bind((f"127.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(2, 254)}", 0))
        sock.settimeout(READ_SECONDS)
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything
        received = bytearray()
        deadline = time.monotonic() + READ_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(received), "timeout"
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                return bytes(received), "timeout"
            except ConnectionResetError:
                return bytes(received), "reset"
            if not chunk:
                return bytes(received), "eof"
            received += chunk
    finally:
        sock.close()


def parse_responses(data: bytes, *, head_possible: bool, truncated_ok: bool) -> list[tuple[int, dict, bytes]]:
    """The HTTP/1.1 responses in `data`, checked for form; AssertionError otherwise."""
    responses = []
    pos = 0
    closed = False
    while pos < len(data):
        assert not closed, f"bytes after a Connection: close answer: {data[pos:pos + 80]!r}"
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            assert truncated_ok, f"incomplete response head: {data[pos:pos + 200]!r}"
            break
        lines = data[pos:end].split(b"\r\n")
        match = _STATUS_LINE.fullmatch(lines[0])
        assert match, f"bad status line {lines[0]!r}"
        status = int(match.group(1))
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b": ")
            assert sep and _HEADER_NAME.fullmatch(name), f"bad header line {line!r}"
            assert b"\r" not in value and b"\n" not in value, f"bad header value {line!r}"
            headers.setdefault(name.decode().lower(), []).append(value.decode("latin-1"))
        pos = end + 4
        if status == 100:
            assert not headers, headers
            continue
        lengths = headers.get("content-length", [])
        assert len(lengths) == 1 and lengths[0].isdigit(), f"Content-Length {lengths}"
        length = int(lengths[0])
        if length and head_possible and (pos == len(data) or data.startswith(b"HTTP/1.1 ", pos)):
            body = b""  # a HEAD answer: the headers a GET gets, no body
        else:
            body = data[pos:pos + length]
            if len(body) < length:
                assert truncated_ok, f"body of {len(body)} bytes, Content-Length {length}"
                break
            pos += length
        responses.append((status, headers, body))
        closed = "close" in [v.lower() for v in headers.get("connection", [])]
    return responses


def check_response(status: int, headers: dict, body: bytes, last: bool) -> None:
    assert status < 500, f"{status} for a client's bytes: {body[:500]!r}"
    assert "date" in headers, headers
    if headers.get("access-control-allow-origin") != ["*"]:  # CORS is on: every routed answer has it
        # Only the answer to bytes that are not HTTP (or past a limit) goes without: the
        # connection's last, and it closes.
        assert last and headers.get("connection") == ["close"], headers
    content_type = headers.get("content-type", [""])[0]
    if not body:
        return
    if content_type != "application/json":
        return
    document = json.loads(body)  # NaN / Infinity may be in predictions, as TF Serving writes them
    if status != 200:
        assert type(document) is dict and list(document) == ["error"], body[:300]
        assert type(document["error"]) is str and document["error"], body[:300]
    else:
        assert type(document) is dict and document, body[:300]


def check(data: bytes) -> None:
    srv = server()
    received, how = exchange(srv.port, data)
    assert how != "timeout", (f"the connection was still open {READ_SECONDS} s after the client's FIN; "
                              f"read: {received[:300]!r}")
    responses = parse_responses(received, head_possible=b"HEAD" in data, truncated_ok=how == "reset")
    for i, (status, headers, body) in enumerate(responses):
        check_response(status, headers, body, last=i == len(responses) - 1)
    srv.raise_errors()
    srv.checks += 1
    if srv.checks % HEALTH_EVERY == 0:
        srv.health_check()
        srv.raise_errors()


def main() -> None:
    server().health_check()  # before the fuzzer's clock starts
    fuzz_common.fuzz_main(check)


if __name__ == "__main__":
    main()
