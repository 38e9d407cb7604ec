"""gRPC transports and lifecycle against the real server: TLS with and without client
certificates, bad TLS configs, the Unix socket's stale file, and draining at SIGTERM."""
from __future__ import annotations

import signal
import socket
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_client import TIMEOUT, predict_request, stubs, tensor
from grpclib.health.v1 import health_pb2
from test_tls import make_pki, write_config


@pytest.fixture(scope="module")
def pki():
    return make_pki()


def model_args(name: str, path) -> list[str]:
    return [f"--model_name={name}", f"--model_base_path={path}"]


def half_plus_two_request():
    return predict_request("half_plus_two", {"x": tensor([[1.0], [2.0], [5.0]])})


def predict_values(stub) -> list[float]:
    return list(stub.Predict(half_plus_two_request(), timeout=TIMEOUT).outputs["y"].float_val)


def health_check(chan: grpc.Channel, service: str) -> int:
    check = chan.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    return check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status


def secure_channel(port: int, ca: str, client=None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.encode(),
        private_key=client.key.encode() if client else None,
        certificate_chain=client.cert.encode() if client else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials,
                               options=[("grpc.ssl_target_name_override", "localhost")])


# ---- TLS ---------------------------------------------------------------------------

def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(start_server, model_store, tmp_path, pki):
    config = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert)
    server = start_server([*model_args("half_plus_two", model_store / "half_plus_two"),
                           f"--ssl_config_file={config}"])
    with secure_channel(server.grpc_port, pki.ca) as chan:
        assert predict_values(stubs(chan)[0]) == [2.5, 3.0, 4.5]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as chan:
        with pytest.raises(grpc.RpcError) as info:
            predict_values(stubs(chan)[0])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with secure_channel(server.grpc_port, pki.other_ca) as chan:
        with pytest.raises(grpc.RpcError) as info:
            predict_values(stubs(chan)[0])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # REST stays plain HTTP, as in TF Serving.
    status, body = server.client().post("/v1/models/half_plus_two:predict", {"instances": [[1.0]]})
    assert (status, body) == (200, {"predictions": [[2.5]]})


def test_client_verify_requires_a_certificate_from_custom_ca(start_server, model_store, tmp_path, pki):
    config = write_config(tmp_path, server_key=pki.server.key, server_cert=pki.server.cert,
                          custom_ca=pki.ca, client_verify=True)
    server = start_server([*model_args("half_plus_two", model_store / "half_plus_two"),
                           f"--ssl_config_file={config}"])
    with secure_channel(server.grpc_port, pki.ca, pki.client) as chan:
        assert predict_values(stubs(chan)[0]) == [2.5, 3.0, 4.5]
    for client in (None, pki.stranger):
        with secure_channel(server.grpc_port, pki.ca, client) as chan:
            with pytest.raises(grpc.RpcError) as info:
                predict_values(stubs(chan)[0])
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.proc.poll() is None


def test_a_bad_ssl_config_stops_the_start_with_its_reason(start_server, model_store, tmp_path):
    config = tmp_path / "ssl.txt"
    config.write_text('server_key: "not a key"\nserver_cert: "not a cert"\n')
    server = start_server([*model_args("half_plus_two", model_store / "half_plus_two"),
                           f"--ssl_config_file={config}"], ready=False)
    assert server.proc.wait(60) == 1
    log = server.log()
    assert f"--ssl_config_file {config}" in log and "Traceback" not in log


# ---- the Unix socket -----------------------------------------------------------------

def _stale_socket(path) -> None:
    """A socket file whose server is gone (what kill -9 leaves behind)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


def test_a_stale_socket_file_does_not_block_the_start(start_server, model_store, tmp_path):
    path = tmp_path / "grpc.sock"
    _stale_socket(path)
    server = start_server([*model_args("half_plus_two", model_store / "half_plus_two"),
                           f"--grpc_socket_path={path}"])
    with grpc.insecure_channel(f"unix:{path}") as chan:
        assert predict_values(stubs(chan)[0]) == [2.5, 3.0, 4.5]
    assert "Removed stale socket file" in server.log()
    assert server.terminate() == 0
    assert not path.exists()  # removed at shutdown


def test_a_socket_in_use_by_a_running_server_is_left_alone(start_server, model_store, tmp_path):
    path = tmp_path / "grpc.sock"
    args = [*model_args("half_plus_two", model_store / "half_plus_two"), f"--grpc_socket_path={path}"]
    first = start_server(args)
    second = start_server(args, ready=False)
    assert second.proc.wait(60) == 1
    assert "is in use by another running server" in second.log()
    with grpc.insecure_channel(f"unix:{path}") as chan:
        assert predict_values(stubs(chan)[0]) == [2.5, 3.0, 4.5]
    assert first.proc.poll() is None


# ---- draining ------------------------------------------------------------------------

def test_sigterm_answers_the_call_in_flight_and_reports_not_serving(start_server, model_store):
    server = start_server([*model_args("spin", model_store / "spin"),
                           "--shutdown_grace_period_seconds=30"])
    chan = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        prediction = stubs(chan)[0]
        request = predict_request("spin", {"n": tensor(1_000_000, np.int64, shape=())})
        started = time.monotonic()
        prediction.Predict(request, timeout=60)
        run_seconds = time.monotonic() - started
        assert health_check(chan, "") == health_pb2.HealthCheckResponse.SERVING
        assert health_check(chan, "spin") == health_pb2.HealthCheckResponse.SERVING

        result: dict = {}
        call = threading.Thread(target=lambda: result.update(
            response=prediction.Predict(request, timeout=60)))
        call.start()
        time.sleep(min(0.3, run_seconds / 3))
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        assert run_seconds > 1.0 and call.is_alive()  # the run outlasts the signal
        # Draining: the server says so on the connection it keeps for the call in flight.
        assert health_check(chan, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        call.join(60)
        assert result["response"].outputs["count"].int64_val == [1_000_000]
        assert server.proc.wait(60) == 0
    finally:
        chan.close()
