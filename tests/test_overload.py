"""The overload bounds against the real server: --grpc_max_connections and
--max_pending_requests refuse at once, with the reason, and the server goes on serving
what it took. (--rest_api_max_connections: test_rest_http.)"""
from __future__ import annotations

import threading
import time

import grpc
import pytest

import grpc_client

pytestmark = pytest.mark.timeout(120)

PREDICT = "/v1/models/{}:predict"


def _own_channel(port: int) -> grpc.Channel:
    # grpcio shares one connection between channels to the same address unless told not to.
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


def _predict(channel: grpc.Channel, x: float, timeout: float = 10.0) -> list[float]:
    from tensorflow_serving.apis import predict_pb2

    prediction, _ = grpc_client.stubs(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(grpc_client.tensor([x], shape=[1]))
    response = prediction.Predict(request, timeout=timeout)
    return list(response.outputs["y"].float_val)


def test_grpc_connections_beyond_the_limit_are_turned_away_with_the_reason(start_server, model_store):
    server = start_server(["--model_name=half_plus_two", f"--model_base_path={model_store / 'half_plus_two'}",
                           "--grpc_max_connections=2"])
    first, second = _own_channel(server.grpc_port), _own_channel(server.grpc_port)
    try:
        assert _predict(first, 1.0) == [2.5]
        assert _predict(second, 3.0) == [3.5]
        third = _own_channel(server.grpc_port)
        try:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:
                _predict(third, 5.0)
            assert time.monotonic() - started < 2.0  # turned away, not left waiting
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert ("Too many connections: this server takes at most 2 at once (--grpc_max_connections)"
                    in refused.value.details())
        finally:
            third.close()
        # The two taken keep being served; once one closes, a new connection is taken.
        assert _predict(first, 7.0) == [5.5]
        second.close()

        def accepted():
            fresh = _own_channel(server.grpc_port)
            try:
                return _predict(fresh, 9.0)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                return None  # the closed one was not noticed yet
            finally:
                fresh.close()

        assert server.wait_for(accepted, timeout=15, interval=0.2) == [6.5]
    finally:
        first.close()
        second.close()


def _metric(page: str, name: str) -> float:
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not on the page:\n{page}")


def test_requests_beyond_max_pending_requests_get_503_and_unavailable_at_once(start_server, model_store, tmp_path):
    # Two slow runs on the worker threads fill a bound of 2; a third inference request,
    # REST or gRPC, is refused at once while status and metrics requests are answered.
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true path: '/metrics' }\n")
    server = start_server([
        "--model_name=spin", f"--model_base_path={model_store / 'spin'}",
        "--max_pending_requests=2", "--inline_run_threshold_micros=0", "--rest_api_timeout_in_ms=4000",
        f"--monitoring_config_file={monitoring}",
    ])
    assert server.client().post(PREDICT.format("spin"), {"inputs": {"n": 5}}) == (200, {"outputs": 5})
    slow_answers: list = []

    def slow() -> None:
        slow_answers.append(server.client().post(PREDICT.format("spin"), {"inputs": {"n": 10**12}}))

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for thread in threads:
        thread.start()
    message = ("Too many requests in progress: this server holds at most 2 at once "
               "(--max_pending_requests); try again shortly")

    def pending() -> float:
        return _metric(server.client().get("/metrics")[1].decode(), "edgeserve_pending_requests")

    server.wait_for(lambda: pending() == 2, timeout=3, interval=0.02)  # both slow ones taken
    started = time.monotonic()
    answer = server.client().post(PREDICT.format("spin"), {"inputs": {"n": 1}})
    assert time.monotonic() - started < 1.0  # at once, while the slow ones run for seconds
    assert answer == (503, {"error": message})
    assert server.client().get("/v1/models/spin")[0] == 200
    status, page = server.client().get("/metrics")
    assert status == 200
    page = page.decode()
    assert _metric(page, "edgeserve_pending_requests") == 2
    assert _metric(page, 'edgeserve_refused_total{limit="max_pending_requests"}') == 1
    assert _metric(page, 'edgeserve_refused_total{limit="rest_api_max_connections"}') == 0
    assert _metric(page, 'edgeserve_open_connections{protocol="REST"}') >= 3
    from tensorflow_serving.apis import predict_pb2

    channel = grpc_client.channel(server.grpc_port)
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "spin"
        request.inputs["n"].CopyFrom(grpc_client.tensor(1, dtype=__import__("numpy").int64, shape=[]))
        prediction, _ = grpc_client.stubs(channel)
        with pytest.raises(grpc.RpcError) as unavailable:
            prediction.Predict(request, timeout=10)
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
        assert unavailable.value.details() == message
        for thread in threads:
            thread.join(30)
        assert [status for status, _ in slow_answers] == [504, 504]  # cut by the run timeout
        # Room again: both protocols are served.
        assert prediction.Predict(request, timeout=10).outputs["count"].int64_val == [1]
    finally:
        channel.close()
    assert server.client().post(PREDICT.format("spin"), {"inputs": {"n": 4}}) == (200, {"outputs": 4})
    page = server.client().get("/metrics")[1].decode()
    assert _metric(page, "edgeserve_pending_requests") == 0
    assert _metric(page, 'edgeserve_refused_total{limit="max_pending_requests"}') == 2  # REST + gRPC
    assert _metric(page, 'edgeserve_open_connections{protocol="GRPC"}') == 0


def test_a_long_lived_grpc_connection_remembers_at_most_1024_closed_streams():
    # h2 keeps 65,536 closed streams per connection (~115 B each, 7.5 MB); the server caps
    # that. 1,100 calls on one real connection, then the server side's record is looked at.
    import asyncio
    import gc

    from grpclib.client import Channel
    from grpclib.health.service import Health
    from grpclib.health.v1.health_pb2 import HealthCheckRequest
    from grpclib.health.v1.health_grpc import HealthStub
    from grpclib.protocol import H2Protocol

    from edgeserve.grpc_api import GrpcServer

    async def run() -> list[int]:
        server = GrpcServer([Health()])
        await server.start("127.0.0.1", 0)
        port = server._server.sockets[0].getsockname()[1]
        channel = Channel("127.0.0.1", port)
        try:
            stub = HealthStub(channel)
            for _ in range(1100):
                await stub.Check(HealthCheckRequest(), timeout=10)
            server_sides = [p.connection._connection for p in gc.get_objects()
                            if isinstance(p, H2Protocol) and not p.connection._connection.config.client_side]
            return [len(h2_connection._closed_streams) for h2_connection in server_sides]
        finally:
            channel.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(asyncio.wait_for(run(), 60)) == [1024]
