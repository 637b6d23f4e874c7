"""Peer of `make bench-peers`: the encoder graph behind KServe's Python model server (the
`kserve` package, as in KServe's custom-model documentation): V2 REST and gRPC, one worker.
KServe batches in its Kubernetes agent sidecar, not in this server: no batching here. Runs in
.venv-peers.

    python benchmarks/peers/kserve_encode.py ENCODER.onnx HTTP_PORT GRPC_PORT
"""

import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import generate_uuid


class Encoder(Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        mu, logvar = self.session.run(["mu", "logvar"], {"x": x})
        outputs = [InferOutput(name=n, shape=list(a.shape), datatype="FP32", data=a)
                   for n, a in (("mu", mu), ("logvar", logvar))]
        return InferResponse(model_name=self.name, infer_outputs=outputs,
                             response_id=payload.id or generate_uuid())


if __name__ == "__main__":
    ModelServer(http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), workers=1).start(
        [Encoder("encoder", sys.argv[1])])
