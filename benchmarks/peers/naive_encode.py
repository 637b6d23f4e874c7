"""The naive peer of benchmark P2: what a competent user writes in twenty lines to serve the
encoder. Kept as written (no batching, stdlib json, one session, 1 intra-op thread); do not
tune it, it is the baseline the service must beat.

    VAE_PEER_MODEL=models/digits/1/encoder.onnx uvicorn benchmarks.peers.naive_encode:app
"""

import json
import os

import numpy as np
import onnxruntime as ort
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["VAE_PEER_MODEL"], opts,
                               providers=["CPUExecutionProvider"])


async def encode(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    x = np.asarray(body["inputs"], dtype=np.float32)
    mu, logvar = session.run(["mu", "logvar"], {"x": x})
    return JSONResponse({"mu": mu.tolist(), "sigma": np.exp(0.5 * logvar).tolist(),
                         "logvar": logvar.tolist()})


app = Starlette(routes=[Route("/encode", encode, methods=["POST"])])
