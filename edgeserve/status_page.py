"""The status page for the technician at the box: `GET /` on the REST port.

Owns the page (`status_page.html`, package data, read once at start), the headers it
is served with, and the answer to a request for `/`. The headers include a
Content-Security-Policy that lets the page run only its own inline script and style
(by their SHA-256, computed here from the file) and fetch only from this origin.

It holds no model state and computes nothing per request: the page's script reads
edgeserve's `GET /v1/models` and the Prometheus page every few seconds and derives
rates, latencies and loop lag in the browser. No data is ever put into the HTML here;
the one value substituted is the metrics page's path, HTML-escaped, in an attribute.
The page's own polls of `/v1/models` carry `?POLL_QUERY`, so that they are not counted
as requests in TF Serving's metrics (the REST adapter checks it).
"""
from __future__ import annotations

import base64
import hashlib
import html
import re
from importlib import resources

POLL_QUERY = b"status_page"  # GET /v1/models?status_page: the page's own polls
_PLACEHOLDER = b"%METRICS_PATH%"
_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)
_STYLE = re.compile(rb"<style>(.*?)</style>", re.S)


def read_template() -> bytes:
    """The page as shipped in the package (a wheel, or the zipapp's site-packages)."""
    return resources.files(__package__).joinpath("status_page.html").read_bytes()


def _source_hash(source: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source).digest()).decode() + "'"


def content_security_policy(page: bytes) -> str:
    """Allows the page's one inline script and one inline style, fetches to this
    origin, data: images (the favicon), and nothing else."""
    scripts = _SCRIPT.findall(page)
    styles = _STYLE.findall(page)
    if len(scripts) != 1 or len(styles) != 1 or page.count(b"<script") != 1 or page.count(b"<style") != 1:
        raise ValueError("status_page.html must hold exactly one <script> and one <style> element")
    return "; ".join((
        "default-src 'none'",
        f"script-src {_source_hash(scripts[0])}",
        f"style-src {_source_hash(styles[0])}",
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ))


class StatusPage:
    """The rendered page and its headers, built once at start."""

    def __init__(self, metrics_path: str, template: bytes | None = None) -> None:
        template = read_template() if template is None else template
        if template.count(_PLACEHOLDER) != 1:
            raise ValueError("status_page.html must name %METRICS_PATH% exactly once")
        self.body = template.replace(_PLACEHOLDER, html.escape(metrics_path, quote=True).encode())
        self.headers = (
            b"Content-Type: text/html; charset=utf-8\r\n"
            b"Cache-Control: no-store\r\n"
            b"Content-Security-Policy: " + content_security_policy(self.body).encode() + b"\r\n"
            b"X-Content-Type-Options: nosniff\r\n"
            b"Referrer-Policy: no-referrer\r\n"
        )

    def page(self) -> tuple[int, bytes, bytes]:
        """(HTTP status, body, header lines) for GET / (the REST adapter answers other
        methods)."""
        return 200, self.body, self.headers
