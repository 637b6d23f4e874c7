"""Pure logic of the V2 door: tensor decoding, Triton's binary framing, metric labels, the
gRPC status mapping, and which repository versions the watcher tries."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from service.doors.v2_rest import HEADER, InferRequest, _decompress, encode_response, parse_request
from service.errors import BadInput, LimitExceeded, ModelNotFound, NotReady, VersionNotFound
from service.lifecycle.calls import v2_endpoint
from service.operations import v2 as oip


def test_to_array_from_json_and_bytes():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(oip.to_array("x", "FP32", [2, 3], arr.tolist()), arr)
    assert np.array_equal(oip.to_array("x", "FP32", [2, 3], arr.reshape(-1).tolist()), arr)
    assert np.array_equal(oip.to_array("x", "FP32", [2, 3], arr.tobytes()), arr)
    with pytest.raises(BadInput, match="x: 20 bytes"):
        oip.to_array("x", "FP32", [2, 3], arr.tobytes()[:20])
    with pytest.raises(BadInput, match="5 elements"):
        oip.to_array("x", "FP32", [2, 3], [1, 2, 3, 4, 5])
    with pytest.raises(BadInput, match="not supported"):
        oip.to_array("x", "BF16", [1], [1.0])
    with pytest.raises(BadInput, match="non-negative"):
        oip.to_array("x", "FP32", [-1, 3], [])
    with pytest.raises(BadInput, match="not FP32 numbers"):
        oip.to_array("x", "FP32", [2], ["a", "b"])


def _binary_body(tensors: list[tuple[str, np.ndarray, str]], extra: dict | None = None):
    inputs, blobs = [], []
    for name, arr, dt in tensors:
        raw = arr.tobytes()
        inputs.append({"name": name, "datatype": dt, "shape": list(arr.shape),
                       "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    head = json.dumps({"inputs": inputs, **(extra or {})}).encode()
    return head + b"".join(blobs), str(len(head))


def test_parse_binary_and_mixed_requests():
    z = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    body, hlen = _binary_body([("start_z", z, "FP32"), ("end_z", -z, "FP32")])
    req, tensors = parse_request(body, hlen)
    assert [t.name for t in tensors] == ["start_z", "end_z"]
    assert np.array_equal(tensors[1].data, -z)
    with pytest.raises(BadInput, match="claimed by no input"):
        parse_request(body + b"\0\0\0\0", hlen)
    with pytest.raises(BadInput, match="exceeds the"):
        parse_request(body[:-4], hlen)
    with pytest.raises(BadInput, match=HEADER):
        parse_request(body, str(len(body) + 1))
    with pytest.raises(BadInput, match="inputs: Field required"):
        parse_request(b'{"outputs": []}', None)
    for bad in (1, True, "x", [1]):  # wrong JSON types anywhere: 400 naming the field
        body = json.dumps({"inputs": [{"name": "n", "datatype": "INT32", "shape": [1],
                                       "data": [1], "parameters": bad}]}).encode()
        with pytest.raises(BadInput, match=r"inputs\.0\.parameters"):
            parse_request(body, None)
    with pytest.raises(BadInput, match=r"inputs\.0\.shape\.0"):
        parse_request(b'{"inputs": [{"name": "n", "datatype": "INT32", "shape": ["1"]}]}', None)
    with pytest.raises(BadInput, match="neither data nor"):
        parse_request(b'{"inputs": [{"name": "n", "datatype": "INT32", "shape": [1]}]}', None)


def test_encode_response_binary_and_json_outputs():
    outs = {"z": np.ones((2, 3), np.float32), "x": np.zeros((2, 1, 2, 2), np.float32)}
    def enc(req: dict, version: int = 1):
        r = encode_response(InferRequest.model_validate({"inputs": [], **req}), "sample",
                            version, outs)
        return r, {k.decode(): v.decode() for k, v in r.headers}

    r, headers = enc({"outputs": [{"name": "x", "parameters": {"binary_data": True}},
                                  {"name": "z"}], "id": "q1"}, 3)
    hlen = int(headers[HEADER.lower()])
    head = json.loads(r.body[:hlen])
    assert head["id"] == "q1" and head["model_version"] == "3"
    assert [o["name"] for o in head["outputs"]] == ["x", "z"]
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 32
    assert head["outputs"][1]["data"] == [1.0] * 6
    assert r.body[hlen:] == outs["x"].tobytes()
    assert headers["x-model-version"] == "3"
    r, headers = enc({})  # no outputs named: all, JSON
    assert HEADER.lower() not in headers and len(json.loads(r.body)["outputs"]) == 2
    r, headers = enc({"parameters": {"binary_data_output": True}})
    assert int(headers[HEADER.lower()]) < len(r.body)
    with pytest.raises(BadInput, match="'mu' is not an output"):
        enc({"outputs": [{"name": "mu"}]})


def test_decompression_is_bounded():
    import gzip
    import zlib

    data = b"0" * 10_000
    assert _decompress(gzip.compress(data), "gzip", 20_000) == data
    assert _decompress(zlib.compress(data), "deflate", 20_000) == data
    with pytest.raises(Exception, match="decompresses past the limit"):
        _decompress(gzip.compress(data), "gzip", 5_000)
    with pytest.raises(BadInput, match="Content-Encoding"):
        _decompress(data, "br", 20_000)


def test_metric_labels_are_bounded():
    assert v2_endpoint("/v2") == "/v2"
    assert v2_endpoint("/v2/models/encoder/versions/7/infer") == "/v2/models/encoder/infer"
    assert v2_endpoint("/v2/models/evil-name-123/ready") == "/v2/models/unknown/ready"
    assert v2_endpoint("/v2/repository/models/x/load") == "/v2/repository/models/{model}/load"
    assert v2_endpoint("/v2/anything/else") is None and v2_endpoint("/encode") is None


def test_grpc_status_mapping():
    def code(exc):
        return getattr(grpc.StatusCode, exc.grpc_code)
    assert code(BadInput("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(LimitExceeded("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code(ModelNotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert code(VersionNotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert code(NotReady("x")) == grpc.StatusCode.UNAVAILABLE
    assert (BadInput("x").status, LimitExceeded("x").status, NotReady("x").status) == \
        (400, 400, 503)


def test_error_table_is_complete():
    """Every kind has an HTTP status, a real gRPC code and a reason; statuses map back."""
    from service.errors import KINDS, kind_of_status

    for name, kind in KINDS.items():
        assert hasattr(grpc.StatusCode, kind.grpc), name
        assert kind_of_status(kind.http) in KINDS
    assert kind_of_status(422) == "bad_input" and kind_of_status(502) == "internal"


def test_watcher_candidates_follow_the_version_policy(tmp_path):
    from service.config import Settings
    from service.runtime.engine import ModelSet
    from service.runtime.watcher import RepositoryWatcher

    models = ModelSet("m", {2: object()})  # type: ignore[dict-item]
    for spec, expect in (("latest", [5, 3]), ("all", [1, 3, 5]), ("1,2", [])):
        w = RepositoryWatcher(models, Settings(model_repository=str(tmp_path), model_name="m",
                                               model_versions=spec))
        assert w.candidates([1, 2, 3, 5]) == expect
