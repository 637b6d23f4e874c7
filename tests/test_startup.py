"""A bad model repository stops `bentoml serve` with a clear message and a non-zero exit."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import Server


def _copy(trained, tmp_path):
    repo = tmp_path / "repository"
    shutil.copytree(trained["repository"], repo)
    return repo, repo / "digits" / "1"


def _corrupt_graph(vdir):
    with open(vdir / "encoder.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff\xff\xff")


def _bad_manifest(vdir):
    data = json.loads((vdir / "manifest.json").read_text())
    del data["latent_dim"]
    (vdir / "manifest.json").write_text(json.dumps(data))


def _missing_graph(vdir):
    (vdir / "decoder.onnx").unlink()


@pytest.mark.parametrize("damage,message", [
    (lambda vdir: shutil.rmtree(vdir), "no versions of model 'digits'"),
    (_corrupt_graph, "encoder.onnx: sha256"),
    (_bad_manifest, "invalid manifest"),
    (_missing_graph, "decoder.onnx: listed in the manifest but missing"),
])
def test_bad_repository_is_refused(trained, tmp_path, damage, message):
    repo, vdir = _copy(trained, tmp_path)
    damage(vdir)
    srv = Server(repo)
    try:
        code = srv.proc.wait(timeout=60)
        assert code != 0
        assert "refusing to start" in srv.output() and message in srv.output()
    finally:
        srv.stop()


def test_int8_variant_is_served_when_asked(trained):
    import httpx
    import numpy as np

    with Server(trained["repository"], {"VAE_VARIANT": "int8"}) as srv:
        info = httpx.post(srv.url + "/model", json={}).json()
        assert info["variant"] == "int8" and info["variants"] == ["fp32", "fp16", "int8"]
        x = np.full((2, 64), 0.5).tolist()
        mu = httpx.post(srv.url + "/encode", json={"inputs": x}).json()["mu"]
        assert np.array(mu).shape == (2, 4)


def test_missing_variant_is_refused(trained, tmp_path):
    from export.onnx_export import export_checkpoint

    export_checkpoint(trained["checkpoint"], tmp_path / "repo", "digits", variants=())
    srv = Server(tmp_path / "repo", {"VAE_VARIANT": "fp16"})
    try:
        assert srv.proc.wait(timeout=60) != 0
        assert "variant 'fp16' not in the manifest" in srv.output()
    finally:
        srv.stop()


def test_operations_settings_json_log_cors_tracing(trained):
    import json as _json
    import time

    import httpx

    with Server(trained["repository"], {"VAE_ACCESS_LOG": "json",
                                        "VAE_CORS_ORIGINS": "http://app.example",
                                        "VAE_TRACING_SAMPLE_RATE": "1.0",
                                        "VAE_TRACING_EXPORTER": "in_memory",
                                        "VAE_BENTOML_METRICS": "true"}) as srv:
        r = httpx.post(srv.url + "/sample", json={"n": 1}, headers={"X-Request-ID": "trace-me-1",
                                                                    "Origin": "http://app.example"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://app.example"
        pre = httpx.options(srv.url + "/encode", headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert pre.status_code == 200
        bad = httpx.options(srv.url + "/encode", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in bad.headers
        time.sleep(0.5)  # the access log is flushed within 0.2 s
        lines = [ln for ln in srv.output().splitlines() if '"request_id":"trace-me-1"' in ln]
        assert lines, srv.output()
        entry = _json.loads(lines[0][lines[0].index("{"):])
        assert entry["path"] == "/sample" and entry["status"] == 200
        text = httpx.get(srv.url + "/metrics").text  # BentoML's route and series, when asked
        assert "bentoml_service_request_total" in text and "vae_requests_total" in text


def test_several_versions_and_selection(trained, tmp_path):
    import httpx

    from export.onnx_export import export_checkpoint

    repo, _ = _copy(trained, tmp_path)
    export_checkpoint(trained["checkpoint"], repo, "digits", variants=())  # version 2
    with Server(repo, {"VAE_MODEL_VERSIONS": "all"}) as srv:
        latest = httpx.post(srv.url + "/model", json={}).json()
        assert latest["version"] == 2 and latest["versions"] == [1, 2]
        assert latest["variants"] == ["fp32"]
        first = httpx.post(srv.url + "/model", json={"version": 1}).json()
        assert first["version"] == 1 and first["variants"] == ["fp32", "fp16", "int8"]
        body = {"n": 2, "seed": 3}
        a = httpx.post(srv.url + "/sample", json={**body, "version": 1}).json()
        b = httpx.post(srv.url + "/sample", json=body).json()
        assert a["z"] == b["z"]  # same eps rule; same weights in both versions
        r = httpx.post(srv.url + "/sample", json={**body, "version": 3})
        assert r.status_code == 404 and "version" in r.json()["error"]


def test_two_workers_metrics_add_up(trained):
    """Two workers: HTTP and gRPC (each worker binds the gRPC port with SO_REUSEPORT) both
    answer on fresh connections, and /metrics adds up what both workers counted."""
    import re
    import time

    import httpx
    import numpy as np
    import tritonclient.grpc as tg

    with Server(trained["repository"], {"VAE_WORKERS": "2"}) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for i in range(24):  # new connections, so both workers take some
                assert httpx.post(srv.url + "/sample", json={"n": 2, "seed": i}).status_code == 200
            for _ in range(8):
                with tg.InferenceServerClient(srv.grpc_url) as g:  # a new channel each time
                    n = tg.InferInput("n", [1], "INT32")
                    n.set_data_from_numpy(np.array([2], np.int32))
                    assert g.infer("sample", [n]).as_numpy("x").shape[0] == 2
            time.sleep(0.3)  # the other worker writes its files within 0.1 s (metrics.py)
            text = c.get("/metrics").text
        grpc_ok = re.search(r'^vae_requests_total\{endpoint="/v2/models/sample/infer",'
                            r'model="digits",protocol="grpc",status="OK"\} (\S+)$', text, re.M)
        assert grpc_ok and float(grpc_ok.group(1)) == 8
        m = re.search(r'^vae_requests_total\{endpoint="/sample",model="digits",protocol="http",'
                      r'status="200"\} (\S+)$', text, re.M)
        assert m and float(m.group(1)) == 24
        items = re.search(r'^vae_items_total\{endpoint="/sample",model="digits",'
                          r'protocol="http"\} (\S+)$', text, re.M)
        assert items and float(items.group(1)) == 48
        assert len(re.findall(r"^vae_model_info\{", text, re.M)) == 1  # one series, max-merged


@pytest.mark.parametrize("tracing", ["0", "1.0"])
def test_request_timeout_answers_504_and_the_server_stays_up(trained, tracing):
    """VAE_TIMEOUT_S bounds an API call whichever door it takes (in front of BentoML's stack
    with tracing off, through it with tracing on), answered by the API middleware with the
    request ID and counted; a gRPC client's deadline bounds its call. A batch wait longer than
    both makes the request late."""
    import time

    import httpx
    import numpy as np
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    with Server(trained["repository"], {"VAE_TIMEOUT_S": "1", "VAE_BATCH_MAX_WAIT_MS": "2500",
                                        "VAE_TRACING_SAMPLE_RATE": tracing,
                                        "VAE_TRACING_EXPORTER": "in_memory"}) as srv:
        r = httpx.post(srv.url + "/encode", json={"inputs": [[0.5] * 64]},
                       headers={"X-Request-ID": "late-1"}, timeout=10)
        assert r.status_code == 504, r.text
        assert r.json() == {"error": "Not able to process the request in 1 seconds",
                            "request_id": "late-1"}
        assert r.headers["x-request-id"] == "late-1"
        assert httpx.get(srv.url + "/livez").status_code == 200
        # gRPC: the client's deadline bounds the call (its thread stops waiting for the batch)
        with tg.InferenceServerClient(srv.grpc_url) as g:
            x = tg.InferInput("x", [1, 1, 8, 8], "FP32")
            x.set_data_from_numpy(np.full((1, 1, 8, 8), 0.5, np.float32))
            t0 = time.monotonic()
            with pytest.raises(InferenceServerException) as late:
                g.infer("encoder", [x], client_timeout=0.5)
            assert "DEADLINE" in str(late.value.status()) and time.monotonic() - t0 < 2.0
            assert g.is_server_live()
        time.sleep(0.3)
        metrics = httpx.get(srv.url + "/metrics").text
        grpc = 'vae_requests_total{endpoint="/v2/models/encoder/infer",model="digits",' \
            'protocol="grpc",'
        assert grpc + 'status="DEADLINE_EXCEEDED"} 1.0' in metrics or \
            grpc + 'status="CANCELLED"} 1.0' in metrics, metrics
        assert 'vae_errors_total{endpoint="/encode",model="digits",protocol="http",' \
            'reason="timeout"} 1.0' in metrics, metrics
        assert 'vae_requests_total{endpoint="/encode",model="digits",protocol="http",' \
            'status="504"} 1.0' in metrics


def test_a_port_taken_before_the_server_binds_it_is_chosen_again(trained, monkeypatch):
    """free_port() can hand out a port that another process takes before the server binds it
    (seen once in the suite as gRPC's "port binding failed"): the server is started again on
    fresh ports, once, instead of failing the test that wanted it."""
    import socket

    from support import servers

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real, calls = servers.free_port, []

    def first_taken() -> int:
        calls.append(1)
        return taken.getsockname()[1] if len(calls) == 2 else real()  # the 2nd is gRPC's

    monkeypatch.setattr(servers, "free_port", first_taken)
    with taken, Server(trained["repository"]) as srv:
        assert srv.grpc_url != f"127.0.0.1:{taken.getsockname()[1]}"
        import tritonclient.grpc as grpcclient
        assert grpcclient.InferenceServerClient(srv.grpc_url).is_server_ready()
