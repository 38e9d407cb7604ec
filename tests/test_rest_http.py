"""The REST port as HTTP/1.1 clients see it: real sockets, raw bytes and curl.

Two servers are shared by the whole module (each start costs a TensorFlow import):
`server` runs with default limits and no CORS; `limited` runs with a 1000-byte body
limit, 500 ms header and idle timeouts and CORS support. Raw sockets speak HTTP where
http.client cannot (pipelining, stalls, half requests, garbage); curl covers what real
clients do with gzip, chunked bodies and `Expect: 100-continue`.
"""
from __future__ import annotations

import gzip
import http.client
import json
import shutil
import socket
import subprocess
import time
import zlib
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from conftest import Client, ServerProcess

HOST = "127.0.0.1"
SOCKET_TIMEOUT = 5.0
PREDICT = "/v1/models/half_plus_two:predict"
STATUS = "/v1/models/half_plus_two"
BODY = b'{"instances": [[1.0], [2.0], [5.0]]}'
PREDICTIONS = {"predictions": [[2.5], [3.0], [4.5]]}
AVAILABLE = {"model_version_status": [{
    "version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
LIMIT = 1000
TOO_LARGE = {"error": f"Request body exceeds the limit of {LIMIT} bytes (--rest_api_max_request_bytes)"}
TIMED_OUT = {"error": "Request not received in time (--rest_api_header_timeout_in_ms)"}
CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "POST, GET",
    "access-control-allow-headers": "Content-Type",
}
# The limited server checks its timers every 0.5 s (server.SWEEP_SECONDS) against
# 0.5 s limits, so a stalled client is cut off after 0.5-1.0 s; 1.5 s leaves slack.
CUT_OFF_WITHIN = 1.5


# ---- servers shared by the module ---------------------------------------------

@pytest.fixture(scope="module")
def servers(model_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rest_http")
    model = ["--model_name=half_plus_two", f"--model_base_path={model_store / 'half_plus_two'}"]
    # Both start at once: the TensorFlow imports overlap.
    started = [
        ServerProcess(tmp, model),
        ServerProcess(tmp, [
            *model,
            f"--rest_api_max_request_bytes={LIMIT}",
            "--rest_api_header_timeout_in_ms=500",
            "--rest_api_idle_timeout_in_ms=500",
            "--rest_api_enable_cors_support",
        ]),
    ]
    try:
        for process in started:
            process.wait_ready()
        yield SimpleNamespace(main=started[0], limited=started[1])
    finally:
        for process in started:
            process.cleanup()


@pytest.fixture(scope="module")
def server(servers) -> ServerProcess:
    return servers.main


@pytest.fixture(scope="module")
def limited(servers) -> ServerProcess:
    return servers.limited


# ---- a raw HTTP/1.1 client ------------------------------------------------------

@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self):
        return json.loads(self.body)


def http_request(method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 version: str = "HTTP/1.1") -> bytes:
    """One request's bytes; Content-Length is added for a body unless chunked."""
    headers = {"Host": HOST, **(headers or {})}
    if body is not None and "Transfer-Encoding" not in headers:
        headers.setdefault("Content-Length", str(len(body)))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + (body or b"")


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


class Conn:
    """One TCP connection; reads responses framed by Content-Length (all edgeserve sends)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT)
        self.buf = b""

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"connection closed by the server; unread: {self.buf!r}")
        self.buf += data

    def read_response(self, *, head_only: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), f"not a status line: {head[:200]!r}"
        _, status, reason = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate header {name}: {head!r}"
            headers[name.lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return Response(int(status), reason, headers, body)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                version: str = "HTTP/1.1") -> Response:
        self.send(http_request(method, path, body, headers, version))
        return self.read_response()

    def wait_closed(self, timeout: float) -> float | None:
        """Seconds until the server closed the connection (EOF or reset), None if it did
        not within `timeout`. Bytes arriving meanwhile are an error: nothing is owed."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:
                data = b""
            assert not self.buf and not data, f"unexpected bytes: {self.buf + data!r}"
            if not data:
                return time.monotonic() - started

    def silent_for(self, seconds: float) -> bool:
        """True if nothing arrives (and the connection stays open) for `seconds`."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(SOCKET_TIMEOUT)
        self.buf += data
        return False


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         version: str = "HTTP/1.1") -> Response:
    with Conn(port) as conn:
        return conn.request(method, path, body, headers, version)


def curl(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args],
                          capture_output=True, timeout=20)


def assert_predicts(port: int) -> None:
    response = call(port, "POST", PREDICT, BODY)
    assert (response.status, response.json()) == (200, PREDICTIONS)


# ---- keep-alive, HTTP/1.0, pipelining -------------------------------------------

def test_keep_alive_serves_several_requests_on_one_connection(server):
    with Conn(server.rest_port) as conn:
        for _ in range(3):
            predicted = conn.request("POST", PREDICT, BODY)
            assert (predicted.status, predicted.json()) == (200, PREDICTIONS)
            assert "connection" not in predicted.headers
            assert predicted.headers["content-type"] == "application/json"
            status = conn.request("GET", STATUS)
            assert (status.status, status.json()) == (200, AVAILABLE)
        assert conn.silent_for(0.1)  # still open, nothing extra sent


def test_http10_without_keep_alive_gets_connection_close_and_the_socket_closes(server):
    with Conn(server.rest_port) as conn:
        response = conn.request("GET", STATUS, version="HTTP/1.0")
        assert (response.status, response.json()) == (200, AVAILABLE)
        assert response.headers["connection"] == "close"
        assert conn.wait_closed(2) is not None


def test_http11_connection_close_is_honoured(server):
    with Conn(server.rest_port) as conn:
        response = conn.request("POST", PREDICT, BODY, {"Connection": "close"})
        assert (response.status, response.json()) == (200, PREDICTIONS)
        assert response.headers["connection"] == "close"
        assert conn.wait_closed(2) is not None


def test_http10_keep_alive_is_acknowledged(server):
    with Conn(server.rest_port) as conn:
        response = conn.request("GET", STATUS, headers={"Connection": "keep-alive"}, version="HTTP/1.0")
        assert (response.status, response.json()) == (200, AVAILABLE)
        assert response.headers.get("connection", "").lower() == "keep-alive"
        again = conn.request("GET", STATUS, headers={"Connection": "keep-alive"}, version="HTTP/1.0")
        assert (again.status, again.json()) == (200, AVAILABLE)


def test_pipelined_requests_are_answered_in_order(server):
    with Conn(server.rest_port) as conn:
        conn.send(
            http_request("POST", PREDICT, BODY)
            + http_request("GET", STATUS)
            + http_request("GET", "/nope")
        )
        first, second, third = (conn.read_response() for _ in range(3))
        assert (first.status, first.json()) == (200, PREDICTIONS)
        assert (second.status, second.json()) == (200, AVAILABLE)
        assert (third.status, third.json()) == (404, {"error": "Malformed request: GET /nope"})
        # A 404 is an answer, not a broken connection: it stays usable.
        fourth = conn.request("POST", PREDICT, b'{"instances": [[0.0]]}')
        assert (fourth.status, fourth.json()) == (200, {"predictions": [[2.0]]})


def test_pipelined_requests_before_garbage_are_answered_then_400_and_close(server):
    with Conn(server.rest_port) as conn:
        conn.send(http_request("GET", STATUS) + http_request("POST", PREDICT, BODY) + b"\x00garbage\r\n\r\n")
        first, second, third = (conn.read_response() for _ in range(3))
        assert (first.status, first.json()) == (200, AVAILABLE)
        assert (second.status, second.json()) == (200, PREDICTIONS)
        assert (third.status, third.json()) == (400, {"error": "Malformed HTTP request: Invalid method encountered"})
        assert third.headers["connection"] == "close"
        assert conn.wait_closed(2) is not None


# ---- request bodies: chunked, gzip, 100-continue ----------------------------------

def test_chunked_request_body_gives_the_same_prediction(server):
    pieces = (BODY[:7], BODY[7:20], BODY[20:])  # chunk borders inside JSON tokens
    with Conn(server.rest_port) as conn:
        head = http_request("POST", PREDICT, None, {"Transfer-Encoding": "chunked"})
        body = chunked(*pieces)
        conn.send(head + body[:10])
        time.sleep(0.05)  # the body arrives in several reads
        conn.send(body[10:])
        response = conn.read_response()
        assert (response.status, response.json()) == (200, PREDICTIONS)
        again = conn.request("POST", PREDICT, BODY)  # framing intact after a chunked body
        assert (again.status, again.json()) == (200, PREDICTIONS)


def test_curl_chunked_upload(server, tmp_path):
    (tmp_path / "body.json").write_bytes(BODY)
    result = curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{tmp_path / 'body.json'}",
                  "-w", "\n%{http_code}", f"http://{HOST}:{server.rest_port}{PREDICT}")
    body, _, code = result.stdout.rpartition(b"\n")
    assert (result.returncode, code, json.loads(body)) == (0, b"200", PREDICTIONS), result.stderr


def test_curl_expect_100_continue(server, tmp_path):
    (tmp_path / "body.json").write_bytes(BODY)
    started = time.monotonic()
    # curl waits up to --expect100-timeout for the 100 before sending the body anyway;
    # 5 s makes a missing 100 Continue visible in the elapsed time.
    result = curl("-v", "--expect100-timeout", "5", "-H", "Expect: 100-continue",
                  "-H", "Content-Type: application/json", "--data", f"@{tmp_path / 'body.json'}",
                  "-w", "\n%{http_code}", f"http://{HOST}:{server.rest_port}{PREDICT}")
    elapsed = time.monotonic() - started
    body, _, code = result.stdout.rpartition(b"\n")
    assert (result.returncode, code, json.loads(body)) == (0, b"200", PREDICTIONS), result.stderr
    assert b"< HTTP/1.1 100 Continue" in result.stderr
    assert elapsed < 3, elapsed


def test_raw_expect_100_continue_is_sent_before_the_body(server):
    with Conn(server.rest_port) as conn:
        conn.send(http_request("POST", PREDICT, None, {
            "Expect": "100-continue", "Content-Length": str(len(BODY))}))
        interim = conn.read_response()  # before a single body byte was sent
        assert (interim.status, interim.reason, interim.body) == (100, "Continue", b"")
        conn.send(BODY)
        response = conn.read_response()
        assert (response.status, response.json()) == (200, PREDICTIONS)


def test_http10_expect_100_continue_is_ignored(server):
    with Conn(server.rest_port) as conn:
        conn.send(http_request("POST", PREDICT, None, {
            "Expect": "100-continue", "Content-Length": str(len(BODY))}, version="HTTP/1.0"))
        assert conn.silent_for(0.3), conn.buf
        conn.send(BODY)
        response = conn.read_response()
        assert (response.status, response.json()) == (200, PREDICTIONS)


def test_curl_gzip_body(server, tmp_path):
    (tmp_path / "body.gz").write_bytes(gzip.compress(BODY))
    result = curl("--data-binary", f"@{tmp_path / 'body.gz'}", "-H", "Content-Encoding: gzip",
                  "-w", "\n%{http_code}", f"http://{HOST}:{server.rest_port}{PREDICT}")
    body, _, code = result.stdout.rpartition(b"\n")
    assert (result.returncode, code, json.loads(body)) == (0, b"200", PREDICTIONS), result.stderr


@pytest.mark.parametrize("encoding, data", [
    ("gzip", gzip.compress(BODY)),
    ("x-gzip", gzip.compress(BODY)),
    ("GZIP", gzip.compress(BODY)),
    ("deflate", zlib.compress(BODY)),
    ("identity", BODY),
])
def test_content_encodings_that_work(server, encoding, data):
    response = call(server.rest_port, "POST", PREDICT, data, {"Content-Encoding": encoding})
    assert (response.status, response.json()) == (200, PREDICTIONS)


def test_gzip_and_chunked_together(server):
    with Conn(server.rest_port) as conn:
        packed = gzip.compress(BODY)
        response = conn.request("POST", PREDICT, chunked(packed[:10], packed[10:]), {
            "Transfer-Encoding": "chunked", "Content-Encoding": "gzip"})
        assert (response.status, response.json()) == (200, PREDICTIONS)


@pytest.mark.parametrize("encoding, data, error", [
    ("gzip", BODY, "Failed to decompress gzip request body: Error -3 while decompressing data: "
                   "incorrect header check"),
    ("gzip", gzip.compress(BODY)[:20], "Failed to decompress gzip request body: truncated input"),
    ("br", BODY, "Unsupported Content-Encoding: br (use gzip or none)"),
], ids=["corrupt", "truncated", "brotli"])
def test_bad_content_encoding_is_400(server, encoding, data, error):
    with Conn(server.rest_port) as conn:
        response = conn.request("POST", PREDICT, data, {"Content-Encoding": encoding})
        assert (response.status, response.json()) == (400, {"error": error})
        # A bad body costs one request, not the connection.
        assert (conn.request("GET", STATUS).status) == 200


# ---- limits: body size, header size, timeouts -------------------------------------

def test_body_over_the_limit_is_413_and_closes(limited):
    padded = BODY + b" " * (2000 - len(BODY))  # valid JSON, just too long
    with Conn(limited.rest_port) as conn:
        response = conn.request("POST", PREDICT, padded)
        assert (response.status, response.reason, response.json()) == (413, "Payload Too Large", TOO_LARGE)
        assert response.headers["connection"] == "close"
        assert conn.wait_closed(2) is not None
    assert_predicts(limited.rest_port)


def test_content_length_over_the_limit_is_413_before_the_body_is_sent(limited):
    with Conn(limited.rest_port) as conn:
        conn.send(http_request("POST", PREDICT, None, {"Content-Length": "5000"}))
        response = conn.read_response()  # 413, not the 408 a wait for the body would give
        assert (response.status, response.json()) == (413, TOO_LARGE)
        assert response.headers["connection"] == "close"
        assert conn.wait_closed(2) is not None
    assert_predicts(limited.rest_port)


def test_expect_100_continue_with_too_large_content_length_gets_413_not_100(limited):
    with Conn(limited.rest_port) as conn:
        conn.send(http_request("POST", PREDICT, None, {"Expect": "100-continue", "Content-Length": "5000"}))
        response = conn.read_response()
        assert (response.status, response.json()) == (413, TOO_LARGE)
        assert conn.wait_closed(2) is not None


def test_chunked_body_over_the_limit_is_413(limited):
    with Conn(limited.rest_port) as conn:
        response = conn.request("POST", PREDICT, chunked(b" " * 600, b" " * 600),
                                {"Transfer-Encoding": "chunked"})
        assert (response.status, response.json()) == (413, TOO_LARGE)
        assert response.headers["connection"] == "close"
        assert conn.wait_closed(2) is not None


def test_gzip_body_inflating_beyond_the_limit_is_413(limited, tmp_path):
    bomb = gzip.compress(b'{"instances": [' + b" " * 5000 + b"[1.0]]}")
    assert len(bomb) < LIMIT
    (tmp_path / "bomb.gz").write_bytes(bomb)
    result = curl("--data-binary", f"@{tmp_path / 'bomb.gz'}", "-H", "Content-Encoding: gzip",
                  "-w", "\n%{http_code}", f"http://{HOST}:{limited.rest_port}{PREDICT}")
    body, _, code = result.stdout.rpartition(b"\n")
    assert (result.returncode, code, json.loads(body)) == (0, b"413", TOO_LARGE), result.stderr
    # A small gzip body is fine on the same server.
    response = call(limited.rest_port, "POST", PREDICT, gzip.compress(BODY), {"Content-Encoding": "gzip"})
    assert (response.status, response.json()) == (200, PREDICTIONS)
    assert_predicts(limited.rest_port)


def test_too_many_headers_is_431_and_closes(server):
    headers = {f"X-Header-{i}": "v" for i in range(150)}
    with Conn(server.rest_port) as conn:
        response = conn.request("GET", STATUS, headers=headers)
        assert (response.status, response.json()) == (431, {"error": "Too many request headers (more than 100)"})
        assert response.headers["connection"] == "close"
        assert conn.wait_closed(2) is not None


def test_huge_header_is_431(server):
    with Conn(server.rest_port) as conn:
        try:
            conn.send(http_request("GET", STATUS, headers={"X-Big": "a" * (256 * 1024)}))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading as soon as the limit is passed
        response = conn.read_response()
        assert response.status == 431, response
        assert "header" in response.json()["error"].lower()
        assert response.headers["connection"] == "close"


def test_half_a_request_line_then_a_stall_gets_408_and_close(limited):
    with Conn(limited.rest_port) as conn:
        started = time.monotonic()
        conn.send(b"POST /v1/mod")
        response = conn.read_response()
        assert (response.status, response.reason, response.json()) == (408, "Request Timeout", TIMED_OUT)
        assert response.headers["connection"] == "close"
        assert conn.wait_closed(1) is not None
        assert time.monotonic() - started < CUT_OFF_WITHIN


def test_body_shorter_than_content_length_gets_408_and_close(limited):
    with Conn(limited.rest_port) as conn:
        started = time.monotonic()
        conn.send(http_request("POST", PREDICT, None, {"Content-Length": "100"}) + b"0123456789")
        response = conn.read_response()
        assert (response.status, response.json()) == (408, TIMED_OUT)
        assert response.headers["connection"] == "close"
        assert conn.wait_closed(1) is not None
        assert time.monotonic() - started < CUT_OFF_WITHIN


def test_idle_keep_alive_connection_is_closed(limited):
    with Conn(limited.rest_port) as conn:
        response = conn.request("GET", STATUS)
        assert (response.status, response.json()) == (200, AVAILABLE)
        closed_after = conn.wait_closed(CUT_OFF_WITHIN)
        assert closed_after is not None and closed_after > 0.3, closed_after


def test_busy_keep_alive_connection_is_not_cut_off(limited):
    """Requests 0.2 s apart for over 1 s (twice both limits): neither timer may fire."""
    with Conn(limited.rest_port) as conn:
        for _ in range(6):
            response = conn.request("POST", PREDICT, BODY)
            assert (response.status, response.json()) == (200, PREDICTIONS)
            time.sleep(0.2)
        response = conn.request("GET", STATUS)
        assert (response.status, response.json()) == (200, AVAILABLE)


@pytest.mark.parametrize("first", [b"", http_request("GET", STATUS)], ids=["fresh", "after-a-request"])
def test_bare_crlf_does_not_defeat_the_timeouts(limited, first):
    with Conn(limited.rest_port) as conn:
        if first:
            conn.send(first)
            assert conn.read_response().status == 200
        conn.send(b"\r\n")
        conn.sock.settimeout(3)
        try:
            data = conn.buf + conn.sock.recv(65536)
        except socket.timeout:
            data = None
        except ConnectionResetError:
            data = b""
        # Closed (EOF) or answered 408, within the cut-off.
        assert data is not None, "connection still open after 3 s"
        assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data


def test_client_leaving_mid_request_changes_nothing(server):
    port = server.rest_port
    # Half a body, then gone.
    with Conn(port) as conn:
        conn.send(http_request("POST", PREDICT, None, {"Content-Length": str(len(BODY))}) + BODY[:10])
    # Half the headers, then a reset (SO_LINGER 0).
    conn = Conn(port)
    conn.send(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nContent-Le")
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.sock.close()
    # A whole request whose answer nobody reads.
    with Conn(port) as conn:
        conn.send(http_request("POST", PREDICT, BODY) + http_request("GET", STATUS))
    # Waiting for 100 Continue, then gone.
    with Conn(port) as conn:
        conn.send(http_request("POST", PREDICT, None, {"Expect": "100-continue", "Content-Length": "33"}))
    time.sleep(0.2)
    assert_predicts(port)
    log = server.log()
    assert "Traceback" not in log
    assert "Internal error" not in log


def test_garbage_bytes_are_400_and_close_and_the_server_keeps_serving(server):
    with Conn(server.rest_port) as conn:
        conn.send(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http at all\r\n\r\n")
        response = conn.read_response()
        assert (response.status, response.json()) == (400, {"error": "Malformed HTTP request: Invalid method encountered"})
        assert response.headers["connection"] == "close"
        assert conn.wait_closed(2) is not None
    with Conn(server.rest_port) as conn:
        response = conn.request("POST", PREDICT, b'{"instances": [[1.0]]}', {
            "Content-Length": "22", "Transfer-Encoding": "chunked"})
        assert (response.status, response.json()) == (
            400, {"error": "Malformed HTTP request: Transfer-Encoding can't be present with Content-Length"})
        assert conn.wait_closed(2) is not None
    with Conn(server.rest_port) as conn:
        response = conn.request("POST", PREDICT, None, {"Content-Length": "abc"})
        assert (response.status, response.json()) == (
            400, {"error": "Malformed HTTP request: Invalid character in Content-Length"})
    assert_predicts(server.rest_port)


def test_head_answer_has_no_body(server):
    with Conn(server.rest_port) as conn:
        conn.send(http_request("HEAD", STATUS))
        head = conn.read_response(head_only=True)
        assert head.status in (200, 405)
        response = conn.request("GET", STATUS)
        assert (response.status, response.json()) == (200, AVAILABLE)


# ---- CORS ---------------------------------------------------------------------------

def test_cors_headers_on_every_answer_with_the_flag(limited):
    with Conn(limited.rest_port) as conn:
        for response, expected in (
            (conn.request("POST", PREDICT, BODY), (200, PREDICTIONS)),
            (conn.request("GET", STATUS), (200, AVAILABLE)),
            (conn.request("GET", "/v1/models/nope"), (404, {"error": "Could not find any versions of model nope"})),
        ):
            assert (response.status, response.json()) == expected
            assert {k: v for k, v in response.headers.items() if k.startswith("access-control-")} == CORS


def test_cors_preflight(limited):
    with Conn(limited.rest_port) as conn:
        response = conn.request("OPTIONS", PREDICT, headers={
            "Origin": "http://x", "Access-Control-Request-Method": "POST"})
        assert (response.status, response.body) == (200, b"")
        assert {k: v for k, v in response.headers.items() if k.startswith("access-control-")} == CORS
        response = conn.request("OPTIONS", PREDICT)
        assert (response.status, response.json()) == (400, {"error": "Origin header is missing in CORS preflight"})
        assert response.headers["access-control-allow-origin"] == "*"


def test_no_cors_headers_without_the_flag(server):
    with Conn(server.rest_port) as conn:
        for response in (conn.request("POST", PREDICT, BODY), conn.request("GET", "/nope")):
            assert response.status in (200, 404)
            assert not [k for k in response.headers if k.startswith("access-control-")], response.headers


# ---- routing --------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, body, status, expected", [
    ("GET", "/nope", None, 404, {"error": "Malformed request: GET /nope"}),
    ("POST", "/v1/models/half_plus_two:nope", b"{}", 404,
     {"error": "Malformed request: POST /v1/models/half_plus_two:nope"}),
    ("GET", "/v1/models/half_plus_two/versions/1/labels/stable", None, 404,
     {"error": "Malformed request: GET /v1/models/half_plus_two/versions/1/labels/stable"}),
    ("POST", "/v1/models/half_plus_two/versions/1/labels/stable:predict", BODY, 404,
     {"error": "Malformed request: POST /v1/models/half_plus_two/versions/1/labels/stable:predict"}),
    ("GET", "/v1/models/half_plus_two/versions/x", None, 404,
     {"error": "Malformed request: GET /v1/models/half_plus_two/versions/x"}),
    ("GET", "/v1/models/half_plus_two/versions/99999999999999999999", None, 400,
     {"error": "Failed to convert version: 99999999999999999999 to numeric."}),
    ("POST", "/v1/models/half_plus_two/versions/9223372036854775808:predict", BODY, 400,
     {"error": "Failed to convert version: 9223372036854775808 to numeric."}),
    ("GET", "/V1/MODELS/half_plus_two", None, 200, AVAILABLE),
    ("GET", "/v1/models/half%5Fplus%5Ftwo", None, 200, AVAILABLE),
    ("GET", "/v1/models/half_plus_two?x=1", None, 200, AVAILABLE),
    ("POST", "/V1/Models/half_plus_two/VERSIONS/1:PREDICT", BODY, 200, PREDICTIONS),
    ("POST", "/v1/models/half%5fplus%5ftwo:predict", BODY, 200, PREDICTIONS),
    ("GET", "/v1/models/no%20pe", None, 404, {"error": "Could not find any versions of model no pe"}),
])
def test_routes(server, method, path, body, status, expected):
    response = call(server.rest_port, method, path, body)
    assert (response.status, response.json()) == (status, expected)


@pytest.mark.parametrize("method, path, allow", [
    ("GET", PREDICT, "POST"),
    ("DELETE", PREDICT, "POST"),
    ("POST", STATUS, "GET"),
    ("PUT", STATUS, "GET"),
    ("POST", "/v1/models/half_plus_two/metadata", "GET"),
])
def test_wrong_method_is_405_with_allow(server, method, path, allow):
    response = call(server.rest_port, method, path, b"{}" if method in ("POST", "PUT") else None)
    assert (response.status, response.reason) == (405, "Method Not Allowed")
    assert response.headers["allow"] == allow
    assert response.json() == {"error": f"Malformed request: {method} {path} (this path answers {allow})"}


# ---- bad input on predict ----------------------------------------------------------------

ROW_ERROR = "Failed to process element: {} of 'instances' list. Error: INVALID_ARGUMENT: {}"
BAD_PREDICTS = [
    ("malformed_json", b'{"instances":', "JSON Parse error: Invalid value. at offset: 13"),
    ("non_utf8_bytes", b"\xff\xfe", "JSON Parse error: Invalid value. at offset: 0"),
    ("non_utf8_in_string", b'{"instances": [["\xff"]]}',
     ROW_ERROR.format(0, 'JSON Value: "\ufffd" Type: String is not of expected type: float')),
    ("empty_body", b"", "JSON Parse error: The document is empty"),
    ("not_an_object", b"[1,2]", "JSON Value: [1, 2] Is not object"),
    ("both_keys", b'{"instances": [[1.0]], "inputs": [[1.0]]}',
     'JSON Value: {\n    "instances": [[1.0]],\n    "inputs": [[1.0]]\n} Not formatted correctly '
     "expecting only one of 'inputs' or 'instances' keys to exist "),
    ("neither_key", b'{"foo": 1}', "Missing 'inputs' or 'instances' key"),
    ("empty_instances", b'{"instances": []}',
     'JSON Value: {\n    "instances": []\n} No values in \'instances\' array'),
    ("signature_not_string", b'{"signature_name": 5, "instances": [[1.0]]}',
     'JSON Value: {\n    "signature_name": 5,\n    "instances": [[1.0]]\n} not formatted correctly. '
     "'signature_name' key must be a string value."),
    ("ragged_rows", b'{"instances": [[1.0], [2.0, 3.0]]}',
     ROW_ERROR.format(1, "Expecting tensor size: 1 but got: 2")),
    ("string_for_float", b'{"instances": [["a"]]}',
     ROW_ERROR.format(0, 'JSON Value: "a" Type: String is not of expected type: float')),
    ("wrong_shape_rows", b'{"instances": [[1.0, 2.0]]}',
     'Input "x" has shape [1,2] but the signature expects [-1,1] (-1: any size)'),
    ("wrong_shape_columns", b'{"inputs": {"x": [[1.0, 2.0]]}}',
     'Input "x" has shape [1,2] but the signature expects [-1,1] (-1: any size)'),
    ("unknown_input_in_object", b'{"instances": [{"z": [1.0]}]}',
     "Failed to process element: 0 key: z of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON object: does not have named input: z"),
    ("missing_input_in_object", b'{"instances": [{}]}',
     "Failed to process element: 0 of 'instances' list. JSON object: {} keys must be equal to: x"),
    ("missing_input_in_columns", b'{"inputs": {"z": [[1.0]]}}', "Missing named input: x in 'inputs' object."),
    ("unknown_signature", b'{"signature_name": "nope", "instances": [[1.0]]}',
     'Serving signature name: "nope" not found in signature def'),
]


@pytest.mark.parametrize("body, error", [case[1:] for case in BAD_PREDICTS], ids=[case[0] for case in BAD_PREDICTS])
def test_bad_predict_body_is_400_with_tf_serving_message(server, body, error):
    response = call(server.rest_port, "POST", PREDICT, body)
    assert (response.status, response.json()) == (400, {"error": error})


def test_extra_input_in_columnar_object_is_ignored_as_in_tf_serving(server):
    # json_tensor.cc FillTensorMapFromInputsMap looks up only the signature's inputs.
    response = call(server.rest_port, "POST", PREDICT, b'{"inputs": {"x": [[1.0]], "z": [[9.0]]}}')
    assert (response.status, response.json()) == (200, {"outputs": [[2.5]]})


@pytest.mark.parametrize("method, path, body, status, error", [
    ("POST", "/v1/models/nope:predict", BODY, 404, "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/half_plus_two/versions/7:predict", BODY, 404,
     "Servable not found for request: Specific(half_plus_two, 7)"),
    ("POST", "/v1/models/half_plus_two/labels/nope:predict", BODY, 400,
     "Unrecognized servable version label: nope"),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/half_plus_two/versions/7", None, 404, "Could not find version 7 of model half_plus_two"),
    ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/half_plus_two:classify", b'{"signature_name": "nope", "examples": [{"x": 1.0}]}',
     400, "No signature was found with the name: nope"),
    ("POST", "/v1/models/nope:regress", b'{"examples": [{"x": 1.0}]}', 404,
     "Servable not found for request: Latest(nope)"),
])
def test_unknown_servables_and_signatures(server, method, path, body, status, error):
    response = call(server.rest_port, method, path, body)
    assert (response.status, response.json()) == (status, {"error": error})


# ---- last: everything above left the servers as they were -------------------------------

def test_zz_servers_still_predict_and_logged_no_traceback(servers):
    for process in (servers.main, servers.limited):
        assert process.proc.poll() is None, process.log()
        assert_predicts(process.rest_port)
        log = process.log()
        assert "Traceback" not in log, log
        assert "Internal error" not in log, log


def test_connections_beyond_the_limit_get_503_and_are_closed(start_server, model_store):
    server = start_server(["--model_name=half_plus_two", f"--model_base_path={model_store / 'half_plus_two'}",
                           "--rest_api_max_connections=2"])
    first, second = server.client(), server.client()
    for client in (first, second):  # both connections open and served
        assert client.post("/v1/models/half_plus_two:predict", {"instances": [[1.0]]}) == (
            200, {"predictions": [[2.5]]})
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as third:
        third.settimeout(10)
        answer = b""
        while chunk := third.recv(4096):  # the server answers at once, then closes
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Connection: close" in head
    assert json.loads(body) == {
        "error": "Too many connections: this server takes at most 2 at once (--rest_api_max_connections)"}
    # The two connections keep working; once one closes, a new one is taken.
    assert first.post("/v1/models/half_plus_two:predict", {"instances": [[3.0]]}) == (200, {"predictions": [[3.5]]})
    second.close()

    def accepted():
        fresh = Client(server.rest_port)
        try:
            answer = fresh.post("/v1/models/half_plus_two:predict", {"instances": [[5.0]]})
        except (ConnectionError, http.client.HTTPException):
            return None  # refused: the closed one was not noticed yet
        else:
            return answer if answer[0] == 200 else None
        finally:
            fresh.close()

    assert server.wait_for(accepted, timeout=10) == (200, {"predictions": [[4.5]]})


def test_a_client_that_shuts_its_sending_side_still_gets_every_answer(start_server, model_store):
    # Two pipelined requests, run on a worker thread, then the client's FIN: both are
    # answered, the last with "Connection: close", and the server closes.
    server = start_server(["--model_name=spin", f"--model_base_path={model_store / 'spin'}",
                           "--inline_run_threshold_micros=0"])
    body = b'{"inputs": {"n": 20000}}'
    request = (b"POST /v1/models/spin:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
               % (len(body), body))
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
        sock.sendall(request * 2)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2, answer
    assert answer.count(b'"outputs": 20000') == 2
    assert answer.rindex(b"Connection: close\r\n") > answer.index(b'"outputs": 20000')
