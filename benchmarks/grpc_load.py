"""A small asyncio gRPC load generator for KServe V2 ModelInfer (benchmark P6): `concurrency`
requests in flight on one channel for `seconds`, the same request each time; run it pinned to
the generator's core. Prints one JSON line: requests/s, p50 and p99 in ms, errors.

    python -m benchmarks.grpc_load 127.0.0.1:8001 --shape 1,1,8,8 --concurrency 64 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg


def request(model: str, shape: list[int]) -> pb.ModelInferRequest:
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="x", datatype="FP32", shape=shape)
    req.raw_input_contents.append(x.tobytes())
    return req


async def run(target: str, req: pb.ModelInferRequest, concurrency: int,
              seconds: float) -> dict:
    opts = [("grpc.max_receive_message_length", 1 << 26)]
    async with grpc.aio.insecure_channel(target, options=opts) as channel:
        stub = pbg.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(req)  # connect and warm
        latencies: list[float] = []
        errors = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    await stub.ModelInfer(req)
                    latencies.append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"rps": len(latencies) / elapsed, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "errors": errors}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("target")
    p.add_argument("--model", default="encoder")
    p.add_argument("--shape", default="1,1,8,8")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10)
    a = p.parse_args(argv)
    req = request(a.model, [int(v) for v in a.shape.split(",")])
    print(json.dumps(asyncio.run(run(a.target, req, a.concurrency, a.seconds))))


if __name__ == "__main__":
    main()
