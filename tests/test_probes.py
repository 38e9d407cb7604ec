"""GET /livez and GET /readyz on the REST port: the probes an orchestrator (k3s,
Kubernetes) points at a box. Ready means every configured model has an AVAILABLE
version; alive means the event loop answers."""
from __future__ import annotations

import shutil

from reload_load import config_text, model_entry


def test_readyz_waits_for_every_configured_model_and_livez_answers_throughout(
        start_server, model_store, tmp_path):
    empty = tmp_path / "late"
    empty.mkdir()  # a model whose first version is not there yet
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("steady", model_store / "half_plus_two"), model_entry("late", empty)))
    server = start_server([f"--model_config_file={config}", "--file_system_poll_wait_seconds=1"])
    client = server.client()
    assert client.get("/livez") == (200, {"status": "alive"})
    assert client.get("/readyz") == (503, {"error": "Not ready: no AVAILABLE version yet for model(s) late"})
    shutil.copytree(model_store / "half_plus_two" / "1", empty / "1")
    server.wait_for(lambda: client.get("/readyz")[0] == 200, timeout=30)
    assert client.get("/readyz") == (200, {"status": "ready"})
    status, body = client.post("/readyz", {})
    assert status == 405 and body == {"error": "Malformed request: POST /readyz (this path answers GET)"}
    # Probes are not requests of a model: TF Serving's request counter leaves them out.
    status, page = client.request("GET", "/monitoring/prometheus/metrics")  # the status page turns it on
    assert status == 200 and b":tensorflow:serving:request_count" in page
    assert b':tensorflow:serving:request_count{model_name=""' not in page  # where unrouted paths count
