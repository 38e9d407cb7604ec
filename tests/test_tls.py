"""--ssl_config_file: TF Serving's SSLConfig text proto → the gRPC server's TLS context,
checked field by field, file error by file error, and with real grpcio clients."""
from __future__ import annotations

import asyncio
import datetime
import importlib
import ipaddress
import logging
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import text_format
from grpclib.health.service import Health
from grpclib.health.v1 import health_pb2
from grpclib.server import Server

from conftest import TFSERVING_TESTDATA
from edgeserve import tls
from edgeserve.protos import ssl_config_pb2

pytestmark = pytest.mark.timeout(60)

CALL_TIMEOUT = 10.0


# --- a small PKI -------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    key: str
    cert: str


def _pem_key(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> str:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption).decode()


def _certificate(subject: str, key, issuer_name: x509.Name | None, issuer_key,
                 *, ca: bool = False, sans=(), usage=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer_name or name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False), critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _make_ca(name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(name, key, None, key, ca=True)
    return key, cert


def _issue(ca, subject: str, **kwargs) -> Identity:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(subject, key, ca_cert.subject, ca_key, **kwargs)
    return Identity(_pem_key(key), _pem_cert(cert))


@dataclass(frozen=True)
class Pki:
    ca: str              # PEM of the CA that issued server and client
    other_ca: str        # PEM of an unrelated CA
    server: Identity     # 127.0.0.1 / localhost
    client: Identity
    stranger: Identity   # a client certificate from other_ca
    encrypted_server_key: str


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def make_pki() -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and client certificates."""
    ca = _make_ca("edgeserve test CA")
    other = _make_ca("some other CA")
    server_sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _issue(ca, "localhost", sans=server_sans, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue(ca, "client", usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger = _issue(other, "stranger", usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    server_key = serialization.load_pem_private_key(server.key.encode(), None)
    return Pki(ca=_pem_cert(ca[1]), other_ca=_pem_cert(other[1]), server=server, client=client,
               stranger=stranger, encrypted_server_key=_pem_key(server_key, b"secret"))


def _quoted_lines(pem: str) -> str:
    """A PEM the way TF Serving's docs write it: one quoted string per line."""
    return "\n  ".join(text_format_quote(line + "\n") for line in pem.splitlines())


def text_format_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def write_config(directory: Path, *, server_key: str = "", server_cert: str = "",
                 custom_ca: str = "", client_verify: bool | None = None,
                 name: str = "ssl_config.txt") -> str:
    lines = ["# written like a TF Serving ssl_config_file"]
    for field, value in (("server_key", server_key), ("server_cert", server_cert),
                         ("custom_ca", custom_ca)):
        if value:
            lines.append(f"{field}: {_quoted_lines(value)}")
    if client_verify is not None:
        lines.append(f"client_verify: {'true' if client_verify else 'false'}")
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# --- the context each config gives -------------------------------------------------

def test_server_only_tls_requests_no_client_certificate(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert)
    context = tls.server_context(path)
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.get_ca_certs() == []


def test_client_verify_requires_a_client_certificate_from_custom_ca(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert,
                        custom_ca=pki.ca, client_verify=True)
    context = tls.server_context(path)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "edgeserve test CA"),),)]


def test_custom_ca_without_client_verify_still_asks_for_nothing(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert,
                        custom_ca=pki.ca, client_verify=False)
    assert tls.server_context(path).verify_mode == ssl.CERT_NONE


def test_client_verify_without_custom_ca_trusts_nobody_and_warns(tmp_path, pki, caplog):
    path = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert,
                        client_verify=True)
    with caplog.at_level(logging.WARNING, logger="edgeserve.tls"):
        context = tls.server_context(path)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.get_ca_certs() == []
    assert "custom_ca is empty" in caplog.text and path in caplog.text


def test_config_written_by_protobuf_itself_parses(tmp_path, pki):
    config = ssl_config_pb2.SSLConfig(server_key=pki.server.key, server_cert=pki.server.cert,
                                      custom_ca=pki.ca, client_verify=True)
    path = tmp_path / "ssl.pbtxt"
    path.write_text(text_format.MessageToString(config))
    assert tls.server_context(str(path)).verify_mode == ssl.CERT_REQUIRED


def test_message_has_tf_serving_names_and_numbers():
    fields = {f.name: f.number for f in ssl_config_pb2.SSLConfig.DESCRIPTOR.fields}
    assert ssl_config_pb2.SSLConfig.DESCRIPTOR.full_name == "tensorflow.serving.SSLConfig"
    assert fields == {"server_key": 1, "server_cert": 2, "custom_ca": 3, "client_verify": 4}
    # Registered under our own file name, never TF Serving's.
    assert ssl_config_pb2.DESCRIPTOR.name == "edgeserve/protos/ssl_config.proto"


def test_generated_module_imports_beside_tensorflow_serving_api():
    for module in ("tensorflow_serving.apis.model_service_pb2",
                   "tensorflow_serving.config.model_server_config_pb2"):
        importlib.import_module(module)
    assert tls.SSLConfig.DESCRIPTOR.full_name == "tensorflow.serving.SSLConfig"


def test_tf_serving_testdata_ssl_configs_parse():
    found = [p for p in sorted(TFSERVING_TESTDATA.rglob("*"))
             if p.is_file() and p.suffix in {".txt", ".pbtxt", ".conf", ".config", ""}
             and p.stat().st_size < 1 << 20 and _looks_like_ssl_config(p)]
    if not found:
        pytest.skip(f"no SSLConfig file under {TFSERVING_TESTDATA}")
    for path in found:
        text_format.Parse(path.read_text(), ssl_config_pb2.SSLConfig())


def _looks_like_ssl_config(path: Path) -> bool:
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError):
        return False
    return "server_key" in text and "server_cert" in text


def test_without_memfd_the_pem_goes_through_a_private_file_removed_after(
        tmp_path, pki, monkeypatch):
    monkeypatch.delattr(tls.os, "memfd_create", raising=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tls.tempfile, "tempdir", str(scratch))
    modes = []
    real_load = ssl.SSLContext.load_cert_chain

    def load_cert_chain(self, certfile, keyfile=None, password=None):
        modes.extend(os.stat(f).st_mode & 0o777 for f in (certfile, keyfile))
        return real_load(self, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", load_cert_chain)
    path = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert)
    assert tls.server_context(path).verify_mode == ssl.CERT_NONE
    assert modes == [0o600, 0o600]
    assert list(scratch.iterdir()) == []


# --- every bad file: one line, naming the file -------------------------------------

def _error(path: str) -> str:
    with pytest.raises(ValueError) as info:
        tls.server_context(path)
    message = str(info.value)
    assert "\n" not in message
    assert path in message
    return message


def test_missing_file(tmp_path):
    message = _error(str(tmp_path / "nope.txt"))
    assert "cannot read" in message and "No such file" in message


def test_directory_instead_of_file(tmp_path):
    assert "cannot read" in _error(str(tmp_path))


def test_unknown_field_reports_line_and_column(tmp_path, pki):
    path = tmp_path / "ssl.txt"
    path.write_text('server_key: "x"\n  client_verfy: true\n')
    message = _error(str(path))
    assert f"{path}:2:3:" in message
    assert "client_verfy" in message


def test_syntax_error_reports_line_and_column(tmp_path):
    path = tmp_path / "ssl.txt"
    path.write_text('server_key: "unterminated\n')
    assert f"{path}:1:" in _error(str(path))


def test_empty_server_cert(tmp_path, pki):
    assert "server_cert is empty" in _error(write_config(tmp_path, server_key=pki.server.key))


def test_empty_server_key(tmp_path, pki):
    assert "server_key is empty" in _error(write_config(tmp_path, server_cert=pki.server.cert))


def test_server_cert_not_pem(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.server.key, server_cert="not a certificate")
    assert "server_cert is not a valid PEM certificate" in _error(path)


def test_server_cert_corrupt_base64(tmp_path, pki):
    lines = pki.server.cert.splitlines()
    lines[2] = "!!!!" + lines[2][4:]
    path = write_config(tmp_path, server_key=pki.server.key, server_cert="\n".join(lines))
    assert "server_cert is not a valid PEM certificate" in _error(path)


def test_server_key_not_pem(tmp_path, pki):
    path = write_config(tmp_path, server_key="not a key", server_cert=pki.server.cert)
    assert "server_key is not a valid PEM private key" in _error(path)


def test_server_key_of_another_certificate(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.client.key, server_cert=pki.server.cert)
    assert "server_key does not match server_cert" in _error(path)


def test_encrypted_server_key_is_refused_without_prompting(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.encrypted_server_key,
                        server_cert=pki.server.cert)
    assert "server_key is encrypted" in _error(path)


def test_custom_ca_not_pem(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert,
                        custom_ca="garbage", client_verify=True)
    assert "custom_ca is not valid PEM" in _error(path)


def test_bad_custom_ca_fails_even_without_client_verify(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert,
                        custom_ca="garbage")
    assert "custom_ca is not valid PEM" in _error(path)


# --- real handshakes: grpclib server, grpcio client --------------------------------

class TlsHealthServer:
    """grpclib's Health service on 127.0.0.1 with `context`, on its own loop thread."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Server | None = None
        self.port = 0

    def __enter__(self) -> "TlsHealthServer":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(CALL_TIMEOUT)
        return self

    async def _start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = Server([Health()])
        await self.server.start(sock=sock, ssl=self.context)

    async def _stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def __exit__(self, *exc) -> None:
        try:
            if self.server is not None:
                asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(CALL_TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(CALL_TIMEOUT)
            self.loop.close()


def health_check(port: int, root_ca: str, client: Identity | None = None):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_ca.encode(),
        private_key=client.key.encode() if client else None,
        certificate_chain=client.cert.encode() if client else None)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        return check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)


def _status_of_failed_check(*args) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        health_check(*args)
    return info.value.code()


@pytest.fixture
def server_only(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert)
    with TlsHealthServer(tls.server_context(path)) as server:
        yield server


@pytest.fixture
def mutual(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert,
                        custom_ca=pki.ca, client_verify=True)
    with TlsHealthServer(tls.server_context(path)) as server:
        yield server


def test_grpcio_client_trusting_the_ca_is_served(server_only, pki):
    reply = health_check(server_only.port, pki.ca)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_client_certificate_is_not_needed_without_client_verify(server_only, pki):
    reply = health_check(server_only.port, pki.ca, pki.client)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_grpcio_client_trusting_another_ca_is_unavailable(server_only, pki):
    assert _status_of_failed_check(server_only.port, pki.other_ca) == grpc.StatusCode.UNAVAILABLE


def test_client_verify_refuses_a_client_without_certificate(mutual, pki):
    assert _status_of_failed_check(mutual.port, pki.ca) == grpc.StatusCode.UNAVAILABLE


def test_client_verify_refuses_a_certificate_from_another_ca(mutual, pki):
    status = _status_of_failed_check(mutual.port, pki.ca, pki.stranger)
    assert status == grpc.StatusCode.UNAVAILABLE


def test_client_verify_serves_a_client_with_a_certificate_from_custom_ca(mutual, pki):
    reply = health_check(mutual.port, pki.ca, pki.client)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_client_verify_without_custom_ca_refuses_every_client(tmp_path, pki):
    path = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert,
                        client_verify=True)
    with TlsHealthServer(tls.server_context(path)) as server:
        status = _status_of_failed_check(server.port, pki.ca, pki.client)
    assert status == grpc.StatusCode.UNAVAILABLE
