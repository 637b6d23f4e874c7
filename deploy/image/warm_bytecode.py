"""Start the image's own CMD once at build time, call every door, stop it: Python writes bytecode
for exactly the modules a serving process imports (`pip install --no-compile` wrote none).

Why: the image runs as uid 10001, which cannot write `__pycache__`, so a module without bytecode
is compiled again at every start; compiling every installed module instead (pip's default) puts
~25 MB of bytecode for never-imported code in the image. Run as root in the Dockerfile's runtime
stage; a failing call fails the build, so this is also a build-time smoke test.
Usage: python deploy/image/warm_bytecode.py [CMD ...]   (default: the image's CMD)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import tritonclient.grpc as grpcclient

CMD = ["/venv/bin/python", "-m", "service.serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(http: httpx.Client, proc: subprocess.Popen, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with {proc.returncode} before it was ready")
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the service was not ready within {limit_s:.0f} s")


def call_every_door(http: httpx.Client, grpc_url: str) -> None:
    def post(path: str, body: dict) -> dict:
        r = http.post(path, json=body)
        r.raise_for_status()
        return r.json()

    model = post("/model", {})
    x = np.asarray(post("/sample", {"n": 2, "seed": 1})["outputs"], dtype=np.float32)
    z = np.zeros((2, model["latent_dim"]), dtype=np.float32).tolist()
    post("/encode", {"inputs": x.tolist(), "samples": 1, "seed": 1})
    post("/decode", {"z": z})
    post("/reconstruct", {"inputs": x.tolist()})
    post("/score", {"inputs": x.tolist(), "k": 2, "seed": 1})
    post("/interpolate", {"start": x[:1].tolist(), "end": x[1:].tolist(), "steps": 3})
    post("/compare", {"a": x.tolist(), "b": x[::-1].tolist()})
    for projection in ("pca", "tsne"):
        http.post("/latent_map", json={"projection": projection})  # 404 without a reference set
    http.post("/neighbors", json={"inputs": x.tolist(), "k": 2})
    http.post("/encode", json={"inputs": "not an image"})  # the 4xx path
    for path in ("/", "/docs", "/docs.json", "/ui/", "/metrics", "/livez", "/v2/models/decoder"):
        http.get(path).raise_for_status()
    r = http.post("/v2/models/decoder/infer", json={"inputs": [
        {"name": "z", "datatype": "FP32", "shape": [2, model["latent_dim"]], "data": z}]})
    r.raise_for_status()
    with grpcclient.InferenceServerClient(grpc_url) as client:
        assert client.is_server_ready()
        client.get_model_metadata("encoder")
        z_in = grpcclient.InferInput("z", [2, model["latent_dim"]], "FP32")
        z_in.set_data_from_numpy(np.zeros((2, model["latent_dim"]), dtype=np.float32))
        client.infer("decoder", [z_in])


def main(argv: list[str]) -> int:
    http_port, grpc_port = free_port(), free_port()
    env = dict(os.environ, BENTOML_HOST="127.0.0.1", BENTOML_PORT=str(http_port),
               VAE_GRPC_HOST="127.0.0.1", VAE_GRPC_PORT=str(grpc_port), VAE_DRAIN_S="0")
    proc = subprocess.Popen(argv or CMD, env=env, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as http:
            wait_ready(http, proc)
            call_every_door(http, f"127.0.0.1:{grpc_port}")
            # the HEALTHCHECK's own process, every 10 s for the container's life
            subprocess.run([sys.executable, "-m", "service.healthcheck"], env=env, check=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    written = sum(f.endswith(".pyc") for _, _, files in os.walk(sys.prefix) for f in files)
    print(f"warm start done: {written} bytecode files under {sys.prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
