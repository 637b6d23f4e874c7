"""KServe V2 over the live server with tritonclient (HTTP and gRPC, as installed): health,
metadata, every model with JSON and binary tensors, seeded equality with the HTTP API, one
batch shared by both transports, errors and their status codes, deadlines, compression."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg
from tritonclient.utils import InferenceServerException

from tests.conftest import Server

MAX_ITEMS = 64
MAX_BODY = 64 * 1024
ENV = {"VAE_BATCH_MAX_WAIT_MS": "250", "VAE_MAX_ITEMS": str(MAX_ITEMS),
       "VAE_MAX_BODY_BYTES": str(MAX_BODY), "VAE_GRPC_MAX_MESSAGE_BYTES": str(MAX_BODY),
       "VAE_REPOSITORY_POLL_S": "0"}


@pytest.fixture(scope="module")
def server(trained):
    with Server(trained["repository"], ENV) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server):
    h = th.InferenceServerClient(server.url.removeprefix("http://"), concurrency=4)
    g = tg.InferenceServerClient(server.grpc_url)
    yield {"http": (h, th), "grpc": (g, tg)}
    h.close()
    g.close()


@pytest.fixture(scope="module")
def dims(server):
    m = httpx.post(server.url + "/model", json={}).json()
    return m["input"]["shape"], m["latent_dim"]


def tensor(mod, name: str, arr: np.ndarray, datatype: str, binary: bool = True):
    t = mod.InferInput(name, list(arr.shape), datatype)
    if mod is th:
        t.set_data_from_numpy(arr, binary_data=binary)
    else:
        t.set_data_from_numpy(arr)
    return t


def outputs(mod, names: list[str], binary: bool):
    if mod is th:
        return [th.InferRequestedOutput(n, binary_data=binary) for n in names]
    return [tg.InferRequestedOutput(n) for n in names]


TRANSPORTS = [("http", True), ("http", False), ("grpc", True)]


def test_health_and_server_metadata(clients):
    for c, _ in clients.values():
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready("encoder") and c.is_model_ready("sample", "1")
        assert not c.is_model_ready("decoder", "99")
    md = clients["http"][0].get_server_metadata()
    assert md["name"] == "vae" and "binary_tensor_data" in md["extensions"]
    assert "model_repository" in md["extensions"]
    gmd = clients["grpc"][0].get_server_metadata()
    assert list(gmd.extensions) == md["extensions"]


def test_model_metadata_both_transports(clients, dims):
    shape, z = dims
    h, g = clients["http"][0], clients["grpc"][0]
    md = h.get_model_metadata("encoder")
    assert md["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, *shape]}]
    assert [o["name"] for o in md["outputs"]] == ["mu", "logvar"]
    assert md["outputs"][0]["shape"] == [-1, z] and md["versions"] == ["1"]
    gmd = g.get_model_metadata("interpolate", "1")
    assert [i.name for i in gmd.inputs] == ["start_z", "end_z", "steps"]
    assert [list(o.shape) for o in gmd.outputs] == [[-1, -1, z], [-1, -1, *shape]]
    assert [i.datatype for i in g.get_model_metadata("sample").inputs] == [
        "INT32", "FP32", "INT64", "INT64", "FP32"]  # n, temperature, seed, labels, like


@pytest.mark.parametrize("transport,binary", TRANSPORTS)
def test_every_model_matches_the_http_api(server, clients, dims, transport, binary):
    shape, z = dims
    c, mod = clients[transport]
    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    api = httpx.Client(base_url=server.url, timeout=30)

    r = c.infer("encoder", [tensor(mod, "x", x, "FP32", binary)],
                outputs=outputs(mod, ["mu", "logvar"], binary))
    ref = api.post("/encode", json={"inputs": x.tolist()}).json()
    np.testing.assert_allclose(r.as_numpy("mu"), ref["mu"], atol=1e-5)
    np.testing.assert_allclose(r.as_numpy("logvar"), ref["logvar"], atol=1e-5)

    zs = np.asarray(ref["mu"], np.float32)
    r = c.infer("decoder", [tensor(mod, "z", zs, "FP32", binary)],
                outputs=outputs(mod, ["x"], binary))
    dec = api.post("/decode", json={"z": zs.tolist()}).json()["outputs"]
    np.testing.assert_allclose(r.as_numpy("x"), dec, atol=1e-5)
    assert r.as_numpy("x").shape == (3, *shape)

    ins = [tensor(mod, "n", np.array([5], np.int32), "INT32", binary),
           tensor(mod, "temperature", np.array([0.5], np.float32), "FP32", binary),
           tensor(mod, "seed", np.array([42], np.int64), "INT64", binary)]
    r = c.infer("sample", ins)
    ref = api.post("/sample", json={"n": 5, "temperature": 0.5, "seed": 42}).json()
    np.testing.assert_allclose(r.as_numpy("z"), ref["z"], atol=1e-5)
    np.testing.assert_allclose(r.as_numpy("x"), ref["outputs"], atol=1e-5)
    assert r.get_response()["model_version"] == "1" if mod is th else True

    a, b = zs[:2], -zs[:2]
    ins = [tensor(mod, "start_z", a, "FP32", binary), tensor(mod, "end_z", b, "FP32", binary),
           tensor(mod, "steps", np.array([4], np.int32), "INT32", binary)]
    r = c.infer("interpolate", ins, model_version="1", parameters={"method": "slerp"})
    ref = api.post("/interpolate", json={"start_z": a.tolist(), "end_z": b.tolist(),
                                         "steps": 4, "method": "slerp"}).json()
    np.testing.assert_allclose(r.as_numpy("z"), ref["z"], atol=1e-5)
    np.testing.assert_allclose(r.as_numpy("x"), ref["outputs"], atol=1e-5)
    assert r.as_numpy("x").shape == (2, 4, *shape)


def test_grpc_typed_contents_equal_raw(server, clients, dims):
    """Typed contents (fp32_contents), as non-tritonclient V2 clients send them."""
    shape, z = dims
    zs = np.random.default_rng(1).standard_normal((2, z)).astype(np.float32)
    with grpc.insecure_channel(server.grpc_url) as ch:
        stub = pbg.GRPCInferenceServiceStub(ch)
        req = pb.ModelInferRequest(model_name="decoder")
        t = req.inputs.add(name="z", datatype="FP32", shape=[2, z])
        t.contents.fp32_contents.extend(zs.reshape(-1).tolist())
        resp = stub.ModelInfer(req)
    typed = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(2, *shape)
    c, mod = clients["grpc"]
    raw = c.infer("decoder", [tensor(mod, "z", zs, "FP32")]).as_numpy("x")
    np.testing.assert_array_equal(typed, raw)


def _metric(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_grpc_and_http_requests_share_one_batch(server, clients, dims):
    """With a 250 ms batch window, an HTTP /encode and a gRPC encoder call sent together are
    answered by one onnxruntime run: the encoder's batch histogram gains one batch of two."""
    shape, _ = dims
    x = np.random.default_rng(2).random((2, *shape), dtype=np.float32)
    g, mod = clients["grpc"]
    label = 'graph="encoder",model="digits"'

    def http_call(barrier: threading.Barrier) -> list:
        barrier.wait()
        r = httpx.post(server.url + "/encode", json={"inputs": x.tolist()}, timeout=30)
        return r.json()["mu"]

    def grpc_call(barrier: threading.Barrier) -> np.ndarray:
        barrier.wait()
        return g.infer("encoder", [tensor(mod, "x", x, "FP32")]).as_numpy("mu")

    for _attempt in range(3):  # threads may, rarely, start further apart than the window
        before = httpx.get(server.url + "/metrics").text
        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            via_http = pool.submit(http_call, barrier)
            via_grpc = pool.submit(grpc_call, barrier)
            results = {"http": via_http.result(), "grpc": via_grpc.result()}
        np.testing.assert_allclose(results["grpc"], results["http"], atol=1e-6)
        deadline = time.monotonic() + 5  # the batcher records its run after answering it
        while True:
            after = httpx.get(server.url + "/metrics").text
            merged = (_metric(after, "vae_batch_requests_sum", label)
                      - _metric(before, "vae_batch_requests_sum", label))
            if merged >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        batches = (_metric(after, "vae_batch_requests_count", label)
                   - _metric(before, "vae_batch_requests_count", label))
        if batches == 1:
            break
    assert batches == 1 and merged == 2
    text = httpx.get(server.url + "/metrics").text
    assert _metric(text, "vae_items_total",
                   'endpoint="/v2/models/encoder/infer",model="digits",protocol="grpc"') >= 2
    assert _metric(text, "vae_requests_total",
                   'endpoint="/encode",model="digits",protocol="http",status="200"') >= 1


def _http_error(fn) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        fn()
    return info.value


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_errors_have_the_contract_codes(clients, dims, transport):
    shape, z = dims
    c, mod = clients[transport]
    codes = {"http": {"bad": "400", "missing": "404"},
             "grpc": {"bad": "StatusCode.INVALID_ARGUMENT", "missing": "StatusCode.NOT_FOUND"}}
    x = np.zeros((2, *shape), np.float32)
    cases = [
        ("missing", "model", lambda: c.infer("nope", [tensor(mod, "x", x, "FP32")])),
        ("missing", "version", lambda: c.infer("encoder", [tensor(mod, "x", x, "FP32")],
                                               model_version="9")),
        ("bad", "shape", lambda: c.infer("encoder", [tensor(mod, "x", x.reshape(2, -1),
                                                            "FP32")])),
        ("bad", "datatype", lambda: c.infer("encoder", [tensor(mod, "x", x.astype(np.float64),
                                                               "FP64")])),
        ("bad", "x: values", lambda: c.infer("encoder", [tensor(mod, "x", x + 2, "FP32")])),
        ("bad", "steps", lambda: c.infer("interpolate", [
            tensor(mod, "start_z", np.zeros((1, z), np.float32), "FP32"),
            tensor(mod, "end_z", np.zeros((1, z), np.float32), "FP32"),
            tensor(mod, "steps", np.array([1], np.int32), "INT32")])),
        ("bad", "required", lambda: c.infer("sample", [
            tensor(mod, "seed", np.array([1], np.int64), "INT64")])),
    ]
    for kind, word, call in cases:
        err = _http_error(call)
        assert err.status() == codes[transport][kind], (word, err)
        assert word in err.message(), (word, err.message())
    assert c.is_server_live()


def test_oversized_requests(clients, dims):
    shape, _ = dims
    over_items = np.zeros((MAX_ITEMS + 1, *shape), np.float32)  # under the byte limits
    assert over_items.nbytes < MAX_BODY
    h, g = clients["http"][0], clients["grpc"][0]
    err = _http_error(lambda: h.infer("encoder", [tensor(th, "x", over_items, "FP32")]))
    assert err.status() == "400" and f"limit of {MAX_ITEMS}" in err.message()
    err = _http_error(lambda: g.infer("encoder", [tensor(tg, "x", over_items, "FP32")]))
    assert err.status() == "StatusCode.RESOURCE_EXHAUSTED" and str(MAX_ITEMS) in err.message()
    huge = np.zeros((MAX_BODY // 4 + 1024,), np.float32).reshape(-1, *shape[1:])[None]
    err = _http_error(lambda: h.infer("encoder", [tensor(th, "x", huge, "FP32")]))
    assert err.status() == "413"
    err = _http_error(lambda: g.infer("encoder", [tensor(tg, "x", huge, "FP32")]))
    assert err.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert h.is_server_ready() and g.is_server_ready()


def test_grpc_deadline_and_http_compression(server, clients, dims):
    shape, z = dims
    g, h = clients["grpc"][0], clients["http"][0]
    zs = np.zeros((1, z), np.float32)
    err = _http_error(lambda: g.infer("decoder", [tensor(tg, "z", zs, "FP32")],
                                      client_timeout=0.05))  # under the 250 ms batch window
    assert err.status() == "StatusCode.DEADLINE_EXCEEDED"
    r = h.infer("decoder", [tensor(th, "z", zs, "FP32")], request_compression_algorithm="gzip")
    assert r.as_numpy("x").shape == (1, *shape)
    assert g.is_server_ready()
    # the JSON access log (the default) has a line per RPC too, with its status code
    time.sleep(0.5)  # the access log is flushed within 0.2 s
    log = server.output()
    assert '"protocol":"grpc"' in log and '"status":"DEADLINE_EXCEEDED"' in log
