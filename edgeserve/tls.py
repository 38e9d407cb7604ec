"""TLS for the gRPC port: turns TF Serving's `--ssl_config_file` into an `ssl.SSLContext`.

The file is TF Serving's `SSLConfig` text proto; its fields hold PEM text, not paths.
Semantics follow TF Serving's `BuildServerCredentials` (model_servers/server.cc):

- `client_verify: true` requires and verifies a client certificate
  (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY) against `custom_ca`.
  With `custom_ca` empty, gRPC loads no client roots, so every client is refused;
  the same happens here (and a warning says why).
- `client_verify: false` does not ask the client for a certificate at all
  (GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE).
- A `custom_ca` that is not valid PEM stops the server even when unused, as in gRPC.

Every problem with the file is a `ValueError` with one line naming the file; the server
prints it and exits non-zero. This module only builds the context: it opens no socket.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import tempfile
from contextlib import contextmanager
from typing import Iterator

from . import text_proto

try:  # If TF Serving's package ever ships the message, use it: registering ours too
    from tensorflow_serving.config.ssl_config_pb2 import SSLConfig  # would clash.
except ImportError:
    from edgeserve.protos.ssl_config_pb2 import SSLConfig

__all__ = ["server_context"]

log = logging.getLogger(__name__)


def server_context(path: str) -> ssl.SSLContext:
    """The server-side TLS context (ALPN h2, TLS >= 1.2) that `path` describes."""
    config = _read_config(path)

    def fail(problem: str) -> ValueError:
        return ValueError(f"--ssl_config_file {path}: {problem}")

    if not config.server_cert.strip():
        raise fail("server_cert is empty")
    if not config.server_key.strip():
        raise fail("server_key is empty")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])  # gRPC clients refuse a server without h2
    context.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)

    try:  # parses every certificate of the chain, so a bad one is named as such
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=config.server_cert)
    except (ssl.SSLError, ValueError) as e:
        raise fail(f"server_cert is not a valid PEM certificate ({_reason(e)})") from None
    try:
        with _pem_file(config.server_cert) as cert_file, _pem_file(config.server_key) as key_file:
            context.load_cert_chain(cert_file, key_file, password=_no_password)
    except _EncryptedKey:
        raise fail("server_key is encrypted; it must be an unencrypted PEM private key") from None
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise fail("server_key does not match server_cert") from None
        raise fail(f"server_key is not a valid PEM private key ({_reason(e)})") from None

    if config.custom_ca.strip():
        try:
            context.load_verify_locations(cadata=config.custom_ca)
        except (ssl.SSLError, ValueError) as e:
            raise fail(f"custom_ca is not valid PEM certificates ({_reason(e)})") from None

    if config.client_verify:
        context.verify_mode = ssl.CERT_REQUIRED
        if not config.custom_ca.strip():
            log.warning("--ssl_config_file %s: client_verify is true but custom_ca is empty: "
                        "no client certificate can be verified, every gRPC client will be "
                        "refused (as in TF Serving)", path)
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def _read_config(path: str) -> SSLConfig:
    return text_proto.read_file(path, SSLConfig(), "ssl_config_file")


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    # Called by OpenSSL only for an encrypted key; without it, OpenSSL would prompt
    # on the terminal and hang a server started by systemd.
    raise _EncryptedKey


def _reason(e: Exception) -> str:
    # OpenSSL's reason without the "(_ssl.c:1234)" location that ssl appends.
    text = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)


@contextmanager
def _pem_file(pem: str) -> Iterator[str]:
    """A path holding `pem` for as long as the block runs, readable only by us.

    ssl loads certificates and keys from paths only. An anonymous memory file keeps
    the key off the disk; where there is none, a 0600 file in a 0700 directory that
    is removed right after loading.
    """
    data = pem.encode("utf-8")
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("edgeserve-tls", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as f:
                f.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="edgeserve-tls-") as directory:
        fd, name = tempfile.mkstemp(dir=directory)  # mkstemp creates it 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield name
