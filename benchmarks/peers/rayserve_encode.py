"""Peer of `make bench-peers`: the encoder graph behind Ray Serve, as its documentation batches
requests (a deployment whose method is wrapped in `@serve.batch`). One replica, a local Ray
instance started here; runs in .venv-peers.

    python benchmarks/peers/rayserve_encode.py ENCODER.onnx PORT [MAX_BATCH] [WAIT_S]
"""

import sys
import time

import numpy as np
import onnxruntime as ort
import ray
from ray import serve
from starlette.requests import Request

MAX_BATCH = int(sys.argv[3]) if len(sys.argv) > 3 else 64
WAIT_S = float(sys.argv[4]) if len(sys.argv) > 4 else 0.001


@serve.deployment(num_replicas=1, max_ongoing_requests=256)
class Encoder:
    def __init__(self, path: str):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=WAIT_S)
    async def encode(self, xs: list[np.ndarray]) -> list[dict]:
        mu, logvar = self.session.run(["mu", "logvar"], {"x": np.concatenate(xs)})
        sigma = np.exp(0.5 * logvar)
        return [{"mu": [m.tolist()], "sigma": [s.tolist()], "logvar": [lv.tolist()]}
                for m, s, lv in zip(mu, sigma, logvar, strict=True)]

    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        return await self.encode(np.asarray(body["inputs"], dtype=np.float32))


if __name__ == "__main__":
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})
    serve.run(Encoder.bind(sys.argv[1]), route_prefix="/encode")
    while True:  # serve.run returns once deployed; the driver keeps Ray up
        time.sleep(3600)
