"""Shared fixtures: one tiny trained + exported model per test session, and a real server helper."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """A small digits VAE trained for a few epochs, its checkpoint, and one exported version."""
    from export.onnx_export import export_checkpoint
    from training.train import TrainConfig, train

    work = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(epochs=3, latent_dim=4, hidden="64,32", out=str(work / "ckpt.pt"),
                      quiet=True, threads=1)
    payload = train(cfg)
    repo = work / "repository"
    path = export_checkpoint(cfg.out, repo, "digits")  # with fp16 and int8 variants
    return {"checkpoint": Path(cfg.out), "payload": payload, "repository": repo,
            "version_dir": path}


class Server:
    """`bentoml serve` of the real service on a free loopback port, stopped by its fixture."""

    def __init__(self, repository: Path, extra_env: dict[str, str] | None = None,
                 bentoml: Path | None = None, cwd: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true",
               "VAE_MODEL_REPOSITORY": str(repository), "VAE_MODEL_NAME": "digits",
               "VAE_GRPC_HOST": "127.0.0.1", "VAE_GRPC_PORT": str(self.grpc_port),
               **(extra_env or {})}
        bentoml = bentoml or Path(sys.executable).parent / "bentoml"
        self.log = open(repository.parent / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(bentoml), "serve", "service.app:VAEService", "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready in {timeout} s: {self.output()}")

    def __enter__(self) -> Server:
        """`with Server(...) as srv:` waits until ready, and always stops the server."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
