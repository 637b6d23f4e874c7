"""Servers for the benchmarks, pinned to CPU 0: this service (`bentoml serve`, default
settings) and the naive peer (uvicorn defaults). Each is a context manager that waits for
readiness (recording how long it took) and stops the whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    popen: subprocess.Popen
    url: str
    ready_path: str
    any_answer: bool = False  # the peer has no readiness route: any HTTP answer means up
    grpc: str = ""  # host:port of its gRPC server, if any
    ready_s: float = 0.0

    def __enter__(self) -> Proc:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 120:
            if self.popen.poll() is not None:
                raise RuntimeError(f"server exited with {self.popen.returncode}")
            try:
                code = httpx.get(self.url + self.ready_path, timeout=1).status_code
                if code == 200 or self.any_answer:
                    self.ready_s = time.perf_counter() - t0
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        stop(self.popen)
        raise TimeoutError("server not ready in 120 s")

    def __exit__(self, *exc: object) -> None:
        stop(self.popen)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=ROOT,
                            env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **env},
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)


def start_bentoml(repo: Path, model: str, env: dict[str, str], work: Path) -> Proc:
    port, grpc_port = free_port(), free_port()
    env = {"VAE_MODEL_REPOSITORY": str(repo), "VAE_MODEL_NAME": model,
           "VAE_GRPC_HOST": "127.0.0.1", "VAE_GRPC_PORT": str(grpc_port), **env}
    popen = _spawn([str(BIN / "bentoml"), "serve", "service.app:VAEService", "--host",
                    "127.0.0.1", "--port", str(port)], env, work / f"bentoml-{port}.log")
    return Proc(popen, f"http://127.0.0.1:{port}", "/readyz", grpc=f"127.0.0.1:{grpc_port}")


def start_peer(encoder: Path, work: Path) -> Proc:
    port = free_port()
    popen = _spawn([str(BIN / "uvicorn"), "benchmarks.peers.naive_encode:app", "--host",
                    "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                   {"VAE_PEER_MODEL": str(encoder)}, work / "peer.log")
    return Proc(popen, f"http://127.0.0.1:{port}", "/encode", any_answer=True)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for c in task.read_text().split():
            out += [int(c), *_children(int(c))]
    return out


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory of a server's processes (the taskset root excluded), MB by command."""
    found = {}
    for p in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
        except OSError:
            continue
        kb = int(next(line.split()[1] for line in status.splitlines()
                      if line.startswith("VmRSS")))
        found[f"{p} {cmd}"] = round(kb / 1024, 1)
    return found
