"""A hand-written table of hostile requests on the three doors (HTTP API, V2 REST, gRPC):
every one gets a 4xx (or a gRPC client-error code) with the contract's error body, never a 5xx
or a hang, and the server answers a normal request right after each."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg

from tests.conftest import CONFIGS, Server

MAX_BODY = 256 * 1024


@pytest.fixture(scope="module", params=list(CONFIGS))
def server(trained, request):
    """The real server in each configuration of conftest.CONFIGS."""
    with Server(trained["repository"], {"VAE_MAX_BODY_BYTES": str(MAX_BODY),
                                        **CONFIGS[request.param]}) as srv:
        yield srv


def _npy(arr: np.ndarray, pickle: bool = False) -> str:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=pickle)
    return base64.b64encode(buf.getvalue()).decode()


def _png_bomb() -> str:
    """A PNG header claiming 100,000 x 100,000 pixels: refused from the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()


ONE = [[[[0.5] * 8] * 8]]
HTTP_CASES = [  # (path, raw body or JSON, expected status)
    ("/encode", b'{"inputs": [[', 400),  # truncated JSON
    ("/encode", b"not json at all", 400),
    ("/encode", {"inputs": "abc"}, 400),
    ("/sample", {"n": "5"}, 400),  # wrong type (strict)
    ("/sample", {"n": 1.5}, 400),
    ("/sample", {"n": 10**30}, 400),  # huge number
    ("/sample", {"n": 1, "temperature": 1e308}, 400),
    ("/sample", b'{"n": 1, "temperature": NaN}', 400),
    ("/encode", b'{"inputs": [[[[NaN]]]]}', 400),
    ("/encode", {"inputs": [[1.0, 2.0, 3.0]]}, 400),  # wrong shape
    ("/encode", {"inputs": [[0.5] * 8] * 8}, 400),  # one item without the batch axis
    ("/encode", {"inputs": []}, 400),  # empty batch
    ("/encode", {"inputs": [[0] * 64] * 1100}, 400),  # over the item limit (1024)
    ("/encode", {"inputs": [[2.0] * 64]}, 400),  # out of range
    ("/encode", {"inputs": {"npy": "!!!not base64"}}, 400),
    ("/encode", {"inputs": {"npy": _npy(np.array([{"a": 1}], dtype=object), pickle=True)}}, 400),
    ("/encode", {"inputs": {"png": ["aGVsbG8="]}}, 400),  # not a PNG
    ("/encode", {"inputs": {"png": [_png_bomb()]}}, 400),
    ("/encode", {"inputs": ONE, "samples": -1}, 400),
    ("/encode", {"inputs": ONE, "samples": 10**6}, 400),
    ("/interpolate", {"start_z": [[0.0] * 4], "end_z": [[1.0] * 4], "steps": 10**9}, 400),
    ("/score", {"inputs": ONE, "k": 0}, 400),
    ("/score", {"inputs": ONE, "k": 10**9}, 400),
    ("/sample", {"n": 1, "bogus": True}, 400),  # unknown field
    ("/sample", {"n": 1, "version": 99}, 404),  # unknown version
    ("/encode", b"x" * (MAX_BODY + 1), 413),  # gigantic body
    ("/v2/models/encoder/infer", b'{"inputs": [', 400),
    ("/v2/models/encoder/infer", {"inputs": [{"name": "x", "datatype": "FP32",
                                              "shape": [1, 1, 8, 8], "data": [0.5]}]}, 400),
    ("/v2/models/encoder/infer", {"inputs": [{"name": "x", "datatype": "FP32",
                                              "shape": [10**12, 1, 8, 8], "data": []}]}, 400),
    ("/v2/models/encoder/infer", {"inputs": [{"name": "x", "datatype": "BYTES",
                                              "shape": [1], "data": ["a"]}]}, 400),
    ("/v2/models/decoder/infer", {"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4],
                                              "parameters": {"binary_data_size": 10**9}}]}, 400),
    ("/v2/models/../../etc/passwd/infer", {"inputs": []}, 404),
    ("/v2/models/encoder/versions/%2e%2e/infer", {"inputs": []}, 404),
    ("/v2/models/encoder/versions/1e9/infer", {"inputs": []}, 404),
]


def _check_alive(url: str) -> None:
    r = httpx.post(url + "/sample", json={"n": 1, "seed": 0}, timeout=10)
    assert r.status_code == 200 and len(r.json()["z"]) == 1


@pytest.mark.parametrize("path,body,status", HTTP_CASES,
                         ids=[f"{i}:{c[0]}" for i, c in enumerate(HTTP_CASES)])
def test_hostile_http_request(server, path, body, status):
    raw = body if isinstance(body, bytes) else None
    r = httpx.post(server.url + path, content=raw, json=None if raw else body,
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text[:300]
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    _check_alive(server.url)


def test_wrong_methods_and_content_types(server):
    r = httpx.get(server.url + "/model")
    assert r.status_code == 405 and "use POST with a JSON body ({} for the defaults)" in \
        r.json()["error"], r.text
    assert httpx.get(server.url + "/encode").status_code == 405
    r = httpx.post(server.url + "/encode", content=b"inputs=1",
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "Content-Type" in r.json()["error"]
    _check_alive(server.url)


def test_a_misspelt_field_gets_the_closest_known_one(server):
    r = httpx.post(server.url + "/encode", json={"input": [[0.5] * 64]})
    assert r.status_code == 400
    assert r.json()["error"] == ("inputs: Field required; input: Extra inputs are not "
                                 "permitted; did you mean 'inputs'?")
    r = httpx.post(server.url + "/sample", json={"n": 2, "colour": 1})
    assert "(fields: " in r.json()["error"] and "temperature" in r.json()["error"]


@pytest.mark.parametrize("name,build,code", [
    ("wrong datatype", lambda r: r.inputs.add(name="z", datatype="FP64", shape=[1, 4]),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("no data", lambda r: r.inputs.add(name="z", datatype="FP32", shape=[1, 4]),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("raw count", lambda r: (r.inputs.add(name="z", datatype="FP32", shape=[1, 4]),
                             r.raw_input_contents.extend([b"\0" * 16, b"\0" * 16])),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("huge shape", lambda r: (r.inputs.add(name="z", datatype="FP32", shape=[2**40, 4]),
                              r.raw_input_contents.append(b"\0" * 16)),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("NaN", lambda r: (r.inputs.add(name="z", datatype="FP32", shape=[1, 4]),
                       r.raw_input_contents.append(np.full(4, np.nan, np.float32).tobytes())),
     grpc.StatusCode.INVALID_ARGUMENT),
])
def test_hostile_grpc_request(server, name, build, code):
    with grpc.insecure_channel(server.grpc_url) as ch:
        stub = pbg.GRPCInferenceServiceStub(ch)
        req = pb.ModelInferRequest(model_name="decoder")
        build(req)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(req, timeout=30)
        assert info.value.code() == code, info.value.details()
        assert info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(pb.ModelInferRequest(model_name="../../etc"), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        ok = pb.ModelInferRequest(model_name="decoder")
        ok.inputs.add(name="z", datatype="FP32", shape=[1, 4])
        ok.raw_input_contents.append(np.zeros(4, np.float32).tobytes())
        assert len(stub.ModelInfer(ok, timeout=30).raw_output_contents) == 1


def _raw_post(port: int, body: bytes, declared: int, pause: float = 0.0,
              chunks: int = 1) -> bytes:
    """POST /sample over a raw socket, declaring `declared` bytes and sending `body` in
    `chunks` pieces with `pause` seconds between them; -> what the server answered."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /sample HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(declared).encode() + b"\r\n\r\n")
        step = max(1, len(body) // chunks)
        for i in range(0, len(body), step):
            s.sendall(body[i:i + step])
            time.sleep(pause)
        if declared > len(body):
            return b""  # abandoned: close without the rest
        return s.recv(65536)


def test_slow_and_abandoned_uploads(server):
    body = b'{"n": 2, "seed": 5}'
    port = int(server.url.rsplit(":", 1)[1])
    slow = _raw_post(port, body, len(body), pause=0.2, chunks=len(body) // 2)  # ~2 s upload
    assert slow.startswith(b"HTTP/1.1 200")
    for _ in range(5):  # clients that vanish mid-body
        assert _raw_post(port, body[:7], len(body) + 100) == b""
    _check_alive(server.url)
    metrics = httpx.get(server.url + "/metrics").text
    assert 'status="500"' not in metrics


def test_client_errors_leave_no_traceback(server):
    """Runs after the module's other tests against the same server (every configuration):
    all their bad requests were answered without a traceback in the server's log."""
    for body, ctype in ((b"{", "application/json"), (b'{"n": 1, "bogus": 2}', "application/json"),
                        (b"n=1", "text/plain")):
        httpx.post(server.url + "/sample", content=body, headers={"content-type": ctype})
    httpx.get(server.url + "/no/such/path")
    httpx.post(server.url + "/v2/models/sample/infer", content=b'{"inputs": 3}')
    time.sleep(0.5)  # log lines are flushed within 0.2 s
    assert "Traceback" not in server.output(), server.output()[-3000:]
