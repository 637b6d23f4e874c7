"""Peer of benchmark P6: the same encoder graph behind a real Triton Inference Server
(nvidia-pytriton ships tritonserver; its Python backend runs this onnxruntime session), with
Triton's dynamic batcher on. Runs in its own venv (make bench-p6), never in the service's.

    python benchmarks/peers/triton_encode.py ENCODER.onnx HTTP_PORT GRPC_PORT METRICS_PORT
"""

import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

path, http_port, grpc_port, metrics_port = sys.argv[1], *map(int, sys.argv[2:5])
opts = ort.SessionOptions()
opts.intra_op_num_threads = opts.inter_op_num_threads = 1
session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
shape = [d for d in session.get_inputs()[0].shape[1:]]
latent = session.get_outputs()[0].shape[1]


@batch
def encode(x: np.ndarray) -> dict:
    mu, logvar = session.run(["mu", "logvar"], {"x": x})
    return {"mu": mu, "logvar": logvar}


config = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1",
                      grpc_port=grpc_port, metrics_port=metrics_port)
with Triton(config=config) as triton:
    triton.bind(model_name="encoder", infer_func=encode,
                inputs=[Tensor(name="x", dtype=np.float32, shape=tuple(shape))],
                outputs=[Tensor(name="mu", dtype=np.float32, shape=(latent,)),
                         Tensor(name="logvar", dtype=np.float32, shape=(latent,))],
                config=ModelConfig(max_batch_size=256,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=0)))
    triton.serve()
