"""This service's own per-request cost, without sockets or uvicorn's protocol: the worker's ASGI
app (BentoML's, with this project's middleware and fast path) called in process by 64
concurrent tasks on one uvloop loop, pinned to CPU 0. With --stub-graph the encoder's
onnxruntime run is replaced by zeros, leaving only the Python work around it (docs/
BENCHMARKS.md, P4: o, the per-request work outside onnxruntime).

    python -m benchmarks.inprocess --model mnist [--stub-graph] 2>/dev/null

(stderr carries the access log, on as operators run it.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.request_path import post, start_lifespan
from benchmarks.serving import images, npy_b64


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repository", default="models")
    p.add_argument("--model", default="mnist")
    p.add_argument("--requests", type=int, default=60000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--stub-graph", action="store_true")
    a = p.parse_args(argv)
    os.environ.update({"BENTOML_DO_NOT_TRACK": "true", "VAE_MODEL_REPOSITORY": a.repository,
                       "VAE_MODEL_NAME": a.model, "VAE_GRPC": "false", "VAE_ACCESS_LOG": "json"})
    os.sched_setaffinity(0, {0})
    import uvloop
    from uvicorn.config import Config

    import service.app
    import service.runtime.engine

    if a.stub_graph:
        zeros = np.zeros((service.app.SETTINGS.batch_max_rows, 1024), np.float32)

        def stub(self: Any, x: np.ndarray) -> list[np.ndarray]:
            return [zeros[: len(x), : self.latent_dim]] * 2
        service.runtime.engine.ModelRuntime.run_encoder = stub
    config = Config(app=service.app.VAEService.to_asgi(is_main=True), log_config=None)
    config.load()  # wraps the app as uvicorn would (its proxy-headers middleware)
    app = config.loaded_app
    manifest = next((Path(a.repository) / a.model).glob("*/manifest.json"))
    shape = json.loads(manifest.read_text())["input"]["shape"]
    body = json.dumps({"inputs": {"npy": npy_b64(images(shape, 1))}}).encode()

    async def one() -> int:
        return await post(app, "/encode", body)

    async def run() -> None:
        lifespan = await start_lifespan(app)
        if await one() != 200:
            sys.exit("the warm-up request failed")
        per_task = a.requests // a.concurrency

        async def client() -> None:
            for _ in range(per_task):
                await one()
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(a.concurrency)))
        took = time.perf_counter() - t0
        print(f"{a.model} /encode, 1 item npy, {a.concurrency} concurrent, graph "
              f"{'stubbed' if a.stub_graph else 'run'}: "
              f"{1e6 * took / (per_task * a.concurrency):.1f} µs per request")
        lifespan.cancel()
    uvloop.run(run())


if __name__ == "__main__":
    main()
