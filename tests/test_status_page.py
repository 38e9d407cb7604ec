"""The status page at GET /, as the technician at the box sees it in a real browser.

One server for the module serves four models from a config file: half_plus_two (label
"stable" -> 1, the one predictions go to), growing (a new version folder appears during
a test), broken (its only version's saved_model.pb is garbage, in a folder whose name
is markup) and "<script>alert(1)</script>" (with a label that is an <img onerror>
payload). Headless Chromium (/usr/bin/chromium, driven over --remote-debugging-pipe by
tests/cdp.py) loads the page with ?refresh=1 and the tests read what it shows.
Screenshots go to $EDGESERVE_TEST_ARTIFACTS (default: test-artifacts/ at the repo root).
The HTTP-level tests run without Chromium; the browser tests skip when it is absent.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, ServerProcess
from edgeserve import metrics
from edgeserve.cli import parse_args
from edgeserve.rest_api import Limits, Request, RestApi
from edgeserve.server import _status_page
from edgeserve.status_page import StatusPage

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
XSS_NAME = "<script>alert(1)</script>"
XSS_LABEL = "<img src=x onerror=window.__pwned=1>"
BROKEN_DIR = "broken<img src=x onerror=window.__pwned=1>"
# Installed before the page's own script: CSP violations and uncaught errors are kept.
WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sample));
window.__errors = [];
window.addEventListener('error', (e) => window.__errors.push(String(e.message)));
"""
CARD = """(() => {
  const card = [...document.querySelectorAll('article.model')].find((a) => a.dataset.model === %s);
  if (!card) return null;
  return {
    title: card.querySelector('h3').textContent,
    summary: card.querySelector('header .pill').textContent,
    labels: [...card.querySelectorAll('.label')].map((l) => l.textContent),
    versions: Object.fromEntries([...card.querySelectorAll('li.version')].map((v) => [v.dataset.version, {
      state: v.dataset.state, text: v.textContent,
      error: v.querySelector('.failure') ? v.querySelector('.failure').textContent : null}])),
    lines: card.querySelectorAll('polyline').length,
    figures: Object.fromEntries([...card.querySelectorAll('[data-figure]')].map(
      (f) => [f.dataset.figure, f.querySelector('.v').textContent])),
  };
})()"""
DURATION = re.compile(r"^(< |> )?\d+(\.\d+)? (µs|ms|s)$")


def card(page, name: str):
    return page.evaluate(CARD % json.dumps(name))


def artifacts_dir() -> Path:
    path = Path(os.environ.get("EDGESERVE_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- the server, the browser and the page, shared by the module --------------------

@pytest.fixture(scope="module")
def store(model_store, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("status_page")
    for name in ("half_plus_two", "growing", "xss"):
        shutil.copytree(model_store / "half_plus_two" / "1", root / name / "1")
    (root / BROKEN_DIR / "1").mkdir(parents=True)
    (root / BROKEN_DIR / "1" / "saved_model.pb").write_bytes(b"\x08\xff\xff not a SavedModel \x00\x01" * 8)
    entries = [
        ("half_plus_two", root / "half_plus_two", {"stable": 1}),
        ("growing", root / "growing", {}),
        ("broken", root / BROKEN_DIR, {}),
        (XSS_NAME, root / "xss", {XSS_LABEL: 1}),
    ]
    lines = ["model_config_list {"]
    for name, base, labels in entries:
        lines.append(f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"')
        lines += [f'    version_labels {{ key: "{label}" value: {v} }}' for label, v in labels.items()]
        lines.append("  }")
    lines.append("}")
    (root / "models.config").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("status_page_server"), [
        f"--model_config_file={store / 'models.config'}",
        "--file_system_poll_wait_seconds=1",
        "--allow_version_labels_for_unavailable_models",
        "--max_num_load_retries=0",
    ])
    try:
        process.wait_ready()
        yield process
    finally:
        process.cleanup()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from cdp import Browser

    tmp = tmp_path_factory.mktemp("chromium")
    instance = Browser(tmp / "profile", tmp / "chromium.log")
    try:
        instance.add_script_on_new_document(WATCH)
        instance.set_viewport(1280, 900)
        yield instance
    finally:
        instance.close()


@pytest.fixture
def page(browser, server):
    """The browser on the server's status page (navigated once, then kept: its history
    of samples is what rates and charts come from)."""
    url = f"http://127.0.0.1:{server.rest_port}/?refresh=1"
    if browser.evaluate("location.href") != url:
        browser.navigate(url)
    browser.wait_for("Number(document.body.dataset.updates) >= 1")
    yield browser
    assert browser.evaluate("window.__csp") == []
    assert browser.evaluate("window.__errors") == []


def get(port: int, path: str, method: str = "GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


# ---- over plain HTTP ------------------------------------------------------------------

def test_page_is_html_with_a_strict_content_security_policy(server):
    status, headers, body = get(server.rest_port, "/")
    csp = headers["Content-Security-Policy"]
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert int(headers["Content-Length"]) == len(body)
    assert body.startswith(b"<!doctype html>")
    assert b'<meta name="viewport" content="width=device-width, initial-scale=1">' in body
    # The policy allows exactly the page's own inline script and style, by their hashes.
    (script,) = re.findall(rb"<script>(.*?)</script>", body, re.S)
    (style,) = re.findall(rb"<style>(.*?)</style>", body, re.S)

    def digest(source: bytes) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(source).digest()).decode() + "'"

    policy = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert policy == {
        "default-src": "'none'", "script-src": digest(script), "style-src": digest(style),
        "connect-src": "'self'", "img-src": "data:", "base-uri": "'none'",
        "form-action": "'none'", "frame-ancestors": "'none'",
    }
    # No external resource of any kind.
    assert not re.search(rb"(src|href)=\"(https?:)?//", body)
    # The page reads TF Serving's default metrics path, served although no
    # --monitoring_config_file asked for it.
    assert f'data-metrics-path="{metrics.DEFAULT_PATH}"'.encode() in body
    status, _, text = get(server.rest_port, metrics.DEFAULT_PATH)
    assert status == 200 and b"edgeserve_event_loop_lag_seconds_bucket" in text
    # HEAD: the same headers, no body.
    status, head_headers, head_body = get(server.rest_port, "/", "HEAD")
    assert (status, head_body) == (200, b"")
    assert head_headers["Content-Security-Policy"] == csp
    assert int(head_headers["Content-Length"]) == len(body)


def test_other_methods_on_root_get_405(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    try:
        conn.request("POST", "/", body=b"{}")
        response = conn.getresponse()
        assert response.status == 405
        assert response.getheader("Allow") == "GET, HEAD"
        assert json.loads(response.read()) == {"error": "Malformed request: POST / (this path answers GET)"}
    finally:
        conn.close()


def test_model_list_gives_each_models_version_labels(server):
    status, _, body = get(server.rest_port, "/v1/models")
    assert status == 200
    labels = {m["name"]: m["version_labels"] for m in json.loads(body)["models"]}
    assert labels == {"half_plus_two": {"stable": "1"}, "growing": {}, "broken": {}, XSS_NAME: {XSS_LABEL: "1"}}


# ---- without a server: the flag, the route, the escaping of the metrics path --------------

def respond(rest: RestApi, method: bytes, url: bytes):
    request = Request(method, url, b"", True, None, None, False)
    return asyncio.run(rest.respond(request))


def test_with_the_flag_off_root_is_not_found_and_metrics_stay_as_configured():
    options = parse_args(["--rest_api_port=8501", "--enable_status_page=false"])
    assert options.enable_status_page is False
    assert _status_page(options, None) == (None, None)  # no page, no metrics page, no recording
    assert _status_page(options, "/m") == ("/m", None)
    rest = RestApi(None, limits=Limits(), enable_cors=False)  # type: ignore[arg-type]
    status, body, headers = respond(rest, b"GET", b"/")
    assert (status, json.loads(body)) == (404, {"error": "Malformed request: GET /"})
    assert headers.startswith(b"Content-Type: application/json\r\n")


def test_with_the_flag_on_the_metrics_path_is_the_configs_or_tf_servings_default():
    options = parse_args(["--rest_api_port=8501"])
    assert options.enable_status_page is True
    path, page = _status_page(options, None)
    assert path == metrics.DEFAULT_PATH and page is not None
    path, page = _status_page(options, "/m")
    assert path == "/m" and b'data-metrics-path="/m"' in page.body
    # Without a REST port there is nowhere to serve it.
    assert _status_page(parse_args([]), None) == (None, None)


def test_root_answers_get_and_head_only():
    rest = RestApi(None, limits=Limits(), enable_cors=False,  # type: ignore[arg-type]
                   status_page=StatusPage(metrics.DEFAULT_PATH))
    status, body, headers = respond(rest, b"GET", b"/?refresh=1")
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert headers.startswith(b"Content-Type: text/html; charset=utf-8\r\n")
    for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS"):
        status, body, headers = respond(rest, method, b"/")
        assert status == 405, method
        assert json.loads(body) == {"error": f"Malformed request: {method.decode()} / (this path answers GET)"}
        assert b"Allow: GET, HEAD\r\n" in headers


def test_the_metrics_path_goes_into_the_page_escaped():
    page = StatusPage('/m"><script>alert(1)</script>')
    assert b'data-metrics-path="/m&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page.body
    assert page.body.count(b"<script") == 1


# ---- in the browser ----------------------------------------------------------------------

def test_lists_every_model_with_its_versions_states_and_labels(page):
    shown = page.wait_for(CARD % json.dumps("half_plus_two"))
    assert shown["title"] == "half_plus_two"
    assert shown["summary"] == "serving v1"
    assert shown["labels"] == ["stable → v1"]
    assert list(shown["versions"]) == ["1"]
    assert shown["versions"]["1"]["state"] == "AVAILABLE"
    assert "label stable" in shown["versions"]["1"]["text"]
    assert re.search(r"\d+(\.\d)? (B|KiB|MiB)", shown["versions"]["1"]["text"])  # its memory
    growing = card(page, "growing")
    assert growing["versions"]["1"]["state"] == "AVAILABLE" and growing["labels"] == []
    assert page.evaluate("[...document.querySelectorAll('article.model h3')].map((h) => h.textContent)") == [
        XSS_NAME, "broken", "growing", "half_plus_two"]
    assert page.evaluate("document.getElementById('conn').textContent") == "live"
    assert page.evaluate("document.getElementById('banner').hidden") is True
    # The memory budget: used, and "no limit" as --total_model_memory_limit_bytes is 0.
    assert re.fullmatch(r"\d+(\.\d)? (B|KiB|MiB|GiB)", page.evaluate("document.getElementById('memory').textContent"))
    assert page.evaluate("document.getElementById('memory-limit').textContent") == "no limit set"


def test_a_new_version_folder_shows_up_without_a_reload(page, store):
    page.evaluate("window.__same_document = true")
    shutil.copytree(store / "growing" / "1", store / "growing" / ".incoming-2")
    os.rename(store / "growing" / ".incoming-2", store / "growing" / "2")
    page.wait_for(f"(() => {{ const c = {CARD % json.dumps('growing')}; "
                  "return c && c.versions['2'] && c.versions['2'].state === 'AVAILABLE'; })()", timeout=30)
    assert page.evaluate("window.__same_document") is True
    assert card(page, "growing")["summary"].startswith("serving v2")


def test_a_broken_version_shows_its_error_code_and_message(page, store):
    shown = page.wait_for(f"(() => {{ const c = {CARD % json.dumps('broken')}; "
                          "return c && c.versions['1'] && c.versions['1'].error && c; })()")
    error = shown["versions"]["1"]["error"]
    assert error.startswith("INTERNAL ")
    assert f"Failed to load SavedModel from {store / BROKEN_DIR / '1'}" in error  # markup in it, as text
    assert shown["summary"] == "not serving: INTERNAL"
    assert page.evaluate("document.querySelector('li.version .failure .code').textContent") == "INTERNAL"


def test_names_labels_and_messages_are_shown_as_text_never_as_markup(page):
    shown = page.wait_for(CARD % json.dumps(XSS_NAME))
    assert shown["title"] == XSS_NAME
    assert shown["labels"] == [f"{XSS_LABEL} → v1"]
    assert XSS_NAME in page.evaluate("document.body.innerText")
    assert page.evaluate("document.querySelectorAll('script').length") == 1  # the page's own
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_requests_per_second_latency_and_loop_lag_are_shown(page, server):
    client = server.client()
    for i in range(40):
        assert client.post("/v1/models/half_plus_two:predict", {"instances": [[float(i)]]})[0] == 200
    shown = page.wait_for(
        f"(() => {{ const c = {CARD % json.dumps('half_plus_two')}; "
        "return c && parseFloat(c.figures.rate) > 0 && c; })()")
    figures = shown["figures"]
    assert 0 < float(figures["rate"]) <= 40
    assert DURATION.match(figures["p50"]) and DURATION.match(figures["p99"]), figures
    assert figures["errors"] == "0"
    assert shown["lines"] >= 2  # requests/s and latency charts drawn
    assert card(page, "growing")["figures"]["rate"] == "0"
    lag = page.wait_for("/\\d/.test(document.getElementById('lag').textContent) && "
                        "document.getElementById('lag').textContent")
    assert DURATION.match(lag), lag
    assert re.fullmatch(r"\d+(\.\d)? (MiB|GiB)", page.evaluate("document.getElementById('rss').textContent"))
    assert int(page.evaluate("document.getElementById('pending').textContent")) >= 0
    # The predictions are counted in TF Serving's request metrics, exactly; the page's
    # own requests (/, its polls of /v1/models, the metrics page) are not.
    text = get(server.rest_port, metrics.DEFAULT_PATH)[2].decode()
    assert ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"} 40.0' in text

    def unnamed_requests() -> str:
        found = re.search(r'request_count\{model_name="",status="OK"\} (\S+)',
                          get(server.rest_port, metrics.DEFAULT_PATH)[2].decode())
        return found.group(1) if found else "0"

    before, updates = unnamed_requests(), int(page.evaluate("document.body.dataset.updates"))
    get(server.rest_port, "/")
    page.wait_for(f"Number(document.body.dataset.updates) >= {updates + 2}")
    assert unnamed_requests() == before


def test_screenshots_on_a_phone_and_a_desktop(page):
    out = artifacts_dir()
    try:
        page.set_viewport(390, 844, scale=2, mobile=True)
        page.wait_for("innerWidth === 390")
        # One column, nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        lefts = page.evaluate("[...document.querySelectorAll('article.model')].map((a) => a.offsetLeft)")
        assert len(lefts) == 4 and len(set(lefts)) == 1
        phone = page.screenshot(out / "status_page_phone.png")
        page.set_viewport(1280, 900)
        page.wait_for("innerWidth === 1280")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        lefts = page.evaluate("[...document.querySelectorAll('article.model')].map((a) => a.offsetLeft)")
        assert len(set(lefts)) == 2  # two columns of models
        desktop = page.screenshot(out / "status_page_desktop.png")
    finally:
        page.set_viewport(1280, 900)
    for png in (phone, desktop):
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


class _FakeServer(http.server.ThreadingHTTPServer):
    """Serves the page and one model, then goes away: the page must say so."""

    daemon_threads = True


def test_an_unreachable_server_or_metrics_page_is_shown_as_such(browser):
    status_page = StatusPage(metrics.DEFAULT_PATH)
    answers = {
        "/": (status_page.headers, status_page.body),
        "/v1/models": (b"Content-Type: application/json\r\n", json.dumps({"models": [{
            "name": "m", "model_version_status": [{"version": "3", "state": "AVAILABLE",
                                                   "status": {"error_code": "OK", "error_message": ""}}],
            "version_labels": {}}]}).encode()),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            headers, body = answers.get(self.path.partition("?")[0], (b"", b""))
            self.send_response(200 if body else 404)
            for line in headers.decode().splitlines():
                name, _, value = line.partition(": ")
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    fake = _FakeServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        browser.navigate(f"http://127.0.0.1:{fake.server_address[1]}/?refresh=0.5")
        browser.wait_for("document.body.dataset.state === 'live'")
        # Models, but no metrics page (yet): said so, and the rest is shown.
        assert card(browser, "m")["versions"]["3"]["state"] == "AVAILABLE"
        assert browser.evaluate("document.getElementById('metrics-error').textContent") == (
            "Metrics unavailable (HTTP 404).")
        assert browser.evaluate("document.getElementById('rss').textContent") == "—"
        answers[metrics.DEFAULT_PATH] = (b"Content-Type: text/plain\r\n",
                                         b"process_resident_memory_bytes 1.5e+08\n")
        browser.wait_for("document.getElementById('rss').textContent === '143 MiB'")
        assert browser.evaluate("document.getElementById('metrics-error').hidden") is True
    finally:
        fake.shutdown()
        fake.server_close()
    thread.join(5)
    started = time.monotonic()
    browser.wait_for("document.body.dataset.state === 'offline'", timeout=10)
    assert time.monotonic() - started < 5
    banner = browser.evaluate("document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent")
    assert banner.startswith("Cannot reach edgeserve at 127.0.0.1:")
    assert "Last update " in banner and "Retrying every 0.5 s." in banner
    assert browser.evaluate("document.getElementById('conn').textContent") == "offline"
    assert browser.evaluate("document.getElementById('updated').textContent").startswith("updated ")
    # What was shown stays, marked as old.
    assert card(browser, "m")["versions"]["3"]["state"] == "AVAILABLE"
    assert browser.evaluate("document.body.classList.contains('offline')") is True
    browser.screenshot(artifacts_dir() / "status_page_offline.png")
