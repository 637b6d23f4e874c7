"""The path one request takes through the project's own code: the files it crosses and the hops
between them (consecutive calls of project functions in different files), for one JSON
`POST /encode` and one gRPC `ModelInfer` of the encoder, traced with sys.setprofile in the
worker's ASGI app run in process. Run it in another checkout to compare (the same method):

    python -m benchmarks.request_path --repository models --model digits
    cd ../old && PYTHONPATH=. python /path/to/benchmarks/request_path.py --repository ...

(self-contained apart from the checkout's service: benchmarks/inprocess.py borrows its ASGI
helpers)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _tracer(root: Path, events: list[tuple[float, str, str]]) -> Any:
    prefixes = (str(root / "service"), str(root / "modelrepo"))

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(prefixes):
            events.append((time.perf_counter(), frame.f_code.co_filename,
                           frame.f_code.co_name))
    return profile


def summarize(events: list[tuple[float, str, str]], root: Path) -> dict:
    files = [str(Path(f).relative_to(root)) for _, f, _ in sorted(events)]
    hops = sum(1 for a, b in zip(files, files[1:], strict=False) if a != b)
    names = [f"{Path(f).stem}.{n}" for _, f, n in sorted(events)]
    steps = [n for i, n in enumerate(names) if i == 0 or files[i] != files[i - 1]]
    return {"files": len(set(files)), "hops": hops, "calls": len(files),
            "order": list(dict.fromkeys(files)), "steps": steps}


async def post(app: Any, path: str, body: bytes) -> int:
    """One JSON POST straight into an ASGI app; -> the status it answered."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 3000), "state": {}, "headers": [
                 (b"host", b"bench"), (b"content-type", b"application/json"),
                 (b"content-length", str(len(body)).encode())]}
    status = [0]

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
    await app(scope, receive, send)
    return status[0]


async def start_lifespan(app: Any) -> asyncio.Task:
    """Run the app's lifespan startup (workers' on_startup hooks); -> its task, which waits
    until cancelled."""
    started = asyncio.Event()

    async def receive() -> dict:
        if not started.is_set():
            return {"type": "lifespan.startup"}
        await asyncio.Event().wait()  # no shutdown: cancel the task
        return {}

    async def send(message: dict) -> None:
        started.set()
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                    "state": {}}, receive, send))
    await started.wait()
    return task


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repository", default="models")
    p.add_argument("--model", default="digits")
    a = p.parse_args(argv)
    grpc_port = 18000 + os.getpid() % 1000
    os.environ.update({"BENTOML_DO_NOT_TRACK": "true", "VAE_MODEL_NAME": a.model,
                       "VAE_MODEL_REPOSITORY": str(Path(a.repository).resolve()),
                       "VAE_GRPC_HOST": "127.0.0.1", "VAE_GRPC_PORT": str(grpc_port)})
    import numpy as np
    import tritonclient.grpc as tg

    import service.app

    root = Path(service.app.__file__).resolve().parents[1]
    app = service.app.VAEService.to_asgi(is_main=True)
    manifest = next((Path(a.repository) / a.model).glob("*/manifest.json"))
    shape = json.loads(manifest.read_text())["input"]["shape"]
    body = json.dumps({"inputs": np.full((1, *shape), 0.5).tolist()}).encode()

    async def encode() -> int:
        return await post(app, "/encode", body)

    def grpc_encode() -> None:
        with tg.InferenceServerClient(f"127.0.0.1:{grpc_port}") as c:
            x = tg.InferInput("x", [1, *shape], "FP32")
            x.set_data_from_numpy(np.full((1, *shape), 0.5, np.float32))
            c.infer("encoder", [x])

    async def run() -> dict:
        life = await start_lifespan(app)
        assert await encode() == 200  # warm: first-use work (batchers, caches) is not traced
        # (no gRPC call before the traced one: its handler thread must start while traced)
        out = {}
        events: list[tuple[float, str, str]] = []
        sys.setprofile(_tracer(root, events))
        assert await encode() == 200
        sys.setprofile(None)
        out["POST /encode"] = summarize(events, root)
        events = []
        threading.setprofile(_tracer(root, events))  # grpc's handler threads
        sys.setprofile(_tracer(root, events))  # the loop, where the batcher runs
        await asyncio.to_thread(grpc_encode)
        sys.setprofile(None)
        threading.setprofile(None)
        out["gRPC ModelInfer encoder"] = summarize(events, root)
        life.cancel()
        return out

    result = asyncio.run(run())
    for name, r in result.items():
        print(f"{name}: {r['files']} files, {r['hops']} hops ({r['calls']} project calls)")
        print("   " + " -> ".join(r["order"]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
