"""Peer of `make bench-peers`: the encoder graph behind LitServe, as its documentation serves a
model with batching (a LitAPI with setup/decode_request/batch/predict/unbatch/encode_response,
`max_batch_size` and `batch_timeout` on). One worker on the CPU; runs in .venv-peers.

    python benchmarks/peers/litserve_encode.py ENCODER.onnx PORT [MAX_BATCH] [TIMEOUT_S] [FAST]

FAST=1: `fast_queue=True` (ZeroMQ between the HTTP server and the inference worker, which
LitServe's documentation recommends for throughput).
"""

import sys

import litserve as ls
import numpy as np
import onnxruntime as ort


class EncoderAPI(ls.LitAPI):
    def setup(self, device):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])

    def decode_request(self, request):
        return np.asarray(request["inputs"], dtype=np.float32)  # [1, C, H, W]

    def batch(self, inputs):
        return np.concatenate(inputs)

    def predict(self, x):
        mu, logvar = self.session.run(["mu", "logvar"], {"x": x})
        return np.stack([mu, logvar], axis=1)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):  # [2, Z], or [1, 2, Z] when max_batch_size is 1
        mu, logvar = np.asarray(output).reshape(2, -1)
        return {"mu": [mu.tolist()], "sigma": [np.exp(0.5 * logvar).tolist()],
                "logvar": [logvar.tolist()]}


if __name__ == "__main__":
    max_batch = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 0.001
    fast = len(sys.argv) > 5 and sys.argv[5] == "1"
    api = EncoderAPI(max_batch_size=max_batch, batch_timeout=timeout, api_path="/encode")
    ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=fast).run(
        host="127.0.0.1", port=int(sys.argv[2]), generate_client_file=False)
