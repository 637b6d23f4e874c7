"""Generated requests for the V2 doors, which BentoML's OpenAPI document does not describe:
hypothesis builds V2 REST bodies and gRPC ModelInferRequests (names, datatypes, shapes, data,
parameters, all models); every answer must be a success or a client error with a message —
never a 5xx / INTERNAL / UNKNOWN — and the server keeps answering."""

from __future__ import annotations

import json

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg

from tests.conftest import Server

MODELS = st.sampled_from(["encoder", "decoder", "sample", "interpolate", "nope"])
NAMES = st.sampled_from(["x", "z", "n", "seed", "temperature", "start_z", "end_z", "steps", "q"])
TYPES = st.sampled_from(["FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES", "FP16", "??"])
SHAPES = st.lists(st.integers(-2, 9), max_size=4)
SCALARS = (st.floats(allow_nan=True, allow_infinity=True, width=32) |
           st.integers(-(2**40), 2**40) | st.booleans() | st.text(max_size=3))
TENSORS = st.fixed_dictionaries({"name": NAMES, "datatype": TYPES, "shape": SHAPES},
                                optional={"data": st.lists(SCALARS, max_size=80)})
BODIES = st.fixed_dictionaries(
    {"inputs": st.lists(TENSORS, max_size=4)},
    optional={"parameters": st.dictionaries(st.sampled_from(["method", "binary_data_output"]),
                                            st.text(max_size=6) | st.booleans(), max_size=2),
              "outputs": st.lists(st.fixed_dictionaries({"name": NAMES}), max_size=2)})
CLIENT_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope="module")
def server(trained):
    with Server(trained["repository"]) as srv:
        yield srv


@SETTINGS
@given(model=MODELS, body=BODIES)
def test_v2_rest_fuzz(server, model, body):
    # json.dumps writes NaN/Infinity literals, which are not JSON: they must be refused too
    r = httpx.post(f"{server.url}/v2/models/{model}/infer", content=json.dumps(body),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code in (200, 400, 404, 413), (r.status_code, r.text[:300])
    if r.status_code != 200:
        assert r.json()["error"]


@SETTINGS
@given(model=MODELS, tensors=st.lists(TENSORS, max_size=4), raw=st.booleans(),
       method=st.sampled_from(["lerp", "slerp", "cubic"]))
def test_v2_grpc_fuzz(server, model, tensors, raw, method):
    req = pb.ModelInferRequest(model_name=model)
    req.parameters["method"].string_param = method
    for t in tensors:
        tensor = req.inputs.add(name=t["name"], datatype=t["datatype"],
                                shape=[max(d, 0) for d in t["shape"]])
        values = [v for v in t.get("data", []) if isinstance(v, float | int)
                  and not isinstance(v, bool)]
        if raw:
            req.raw_input_contents.append(np.asarray(values, np.float32).tobytes())
        else:
            tensor.contents.fp32_contents.extend(float(v) for v in values)
    with grpc.insecure_channel(server.grpc_url) as ch:
        try:
            pbg.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            assert exc.details()
    assert code in CLIENT_CODES, code


def test_server_still_answers(server):
    assert httpx.post(server.url + "/sample", json={"n": 1}).status_code == 200
