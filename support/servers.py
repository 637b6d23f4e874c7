"""The servers the tests, benchmarks and load tests start: this service (`vae-serve` on
free loopback ports, HTTP and gRPC) and the benchmarks' naive peer (uvicorn defaults). Each is
a context manager that waits for readiness (recording how long it took) and stops the whole
process group; benchmarks pin them to CPU 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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
    proc: subprocess.Popen
    url: str
    ready_path: str
    any_answer: bool = False  # the peer has no readiness route: any HTTP answer means up
    grpc_url: str = ""  # host:port of its gRPC server, if any
    log: Path | None = None  # its stdout and stderr
    ready_s: float = 0.0
    # starts the same server on fresh ports: free_port() only finds a port that was free a
    # moment ago, and another process may take it before the server binds it
    respawn: Callable[[], Proc] | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def wait_ready(self, timeout: float = 120.0) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                if self.respawn is not None and _lost_port_race(self.output()):
                    self._become(self.respawn())
                    continue
                raise RuntimeError(f"server exited with {self.proc.returncode}: "
                                   f"{self.output()}")
            try:
                code = httpx.get(self.url + self.ready_path, timeout=2).status_code
                if code == 200 or self.any_answer:
                    self.ready_s = time.perf_counter() - t0
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready in {timeout:g} s: {self.output()}")

    def _become(self, other: Proc) -> None:
        """Take over a respawned server's process and addresses (respawned once at most)."""
        self.proc, self.url, self.grpc_url, self.log = (other.proc, other.url, other.grpc_url,
                                                        other.log)
        self.respawn = None

    def __enter__(self) -> Proc:
        """`with start_...(...) as srv:` waits until ready, and always stops the server."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        """The end of its log."""
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        stop(self.proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group; after 20 s SIGKILL to it and to every process
    it started (BentoML's workers run in sessions of their own, outside the group)."""
    if proc.poll() is None:
        family = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_all([proc.pid, *family])
            proc.wait()


def _lost_port_race(log: str) -> bool:
    """Did the server exit because its port was taken (gRPC or HTTP)?"""
    text = log.lower()
    return "port binding failed" in text or "address already in use" in text


def kill_all(pids: list[int]) -> None:
    """SIGKILL to each pid that is still there."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _spawn(cmd: list[str], env: dict[str, str], log: Path, pin: bool = True,
           cwd: Path = ROOT) -> subprocess.Popen:
    with open(log, "ab") as out:  # the child keeps its own copy
        return subprocess.Popen(["taskset", "-c", "0", *cmd] if pin else cmd, cwd=cwd,
                                env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **env},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def start_service(env: dict[str, str], log_dir: Path, *, pin: bool = False,
                  bentoml: Path | None = None, cwd: Path = ROOT, port: int | None = None) -> Proc:
    """`vae-serve` of this service on free loopback ports (HTTP, and gRPC unless env says
    otherwise), its output in log_dir/bentoml-<port>.log. `bentoml`: another install's CLI
    (an installed wheel or bento); pin: on CPU 0 (benchmarks); port: a given HTTP port (a
    replica restarted where its balancer expects it)."""
    def spawn(given: int | None) -> Proc:
        http = given or free_port()
        full = {"VAE_GRPC_HOST": "127.0.0.1", "VAE_GRPC_PORT": str(free_port()), **env}
        log = Path(log_dir) / f"bentoml-{http}.log"
        popen = _spawn([*_serve_command(bentoml, cwd), "--host", "127.0.0.1", "--port",
                        str(http)], full, log, pin, cwd)
        return Proc(popen, f"http://127.0.0.1:{http}", "/readyz", log=log,
                    grpc_url=f"127.0.0.1:{full['VAE_GRPC_PORT']}")

    proc = spawn(port)
    if port is None and "VAE_GRPC_PORT" not in env:  # both ports ours to choose again
        proc.respawn = lambda: spawn(None)
    return proc


def _serve_command(bentoml: Path | None, cwd: Path) -> list[str]:
    """`vae-serve` (service/serve.py, run with -m so that `cwd`'s code is the one served) by this
    interpreter or by another install's (beside its `bentoml`); `bentoml serve` for an older
    checkout that has no such command."""
    python = Path(bentoml).parent / "python" if bentoml is not None else Path(sys.executable)
    if (Path(cwd) / "service" / "serve.py").exists():
        return [str(python), "-m", "service.serve"]
    return [str(bentoml or BIN / "bentoml"), "serve", "service.app:VAEService"]


def start_bentoml(repo: Path, model: str, env: dict[str, str], work: Path,
                  cwd: Path = ROOT) -> Proc:
    """This service for a benchmark: `model` from `repo`, default settings but `env`, CPU 0.
    `cwd`: another checkout of the project (a baseline to compare with, e.g. a git worktree of
    an older commit), served by the same interpreter."""
    return start_service({"VAE_MODEL_REPOSITORY": str(Path(repo).resolve()),
                          "VAE_MODEL_NAME": model, **env}, work, pin=True, cwd=cwd)


def start_documented(repo: Path, model: str, work: Path) -> Proc:
    """The /encode operation behind BentoML's documented `@bentoml.api` path
    (benchmarks/peers/documented_path.py), on CPU 0."""
    port = free_port()
    env = {"VAE_MODEL_REPOSITORY": str(Path(repo).resolve()), "VAE_MODEL_NAME": model}
    popen = _spawn([str(BIN / "bentoml"), "serve", "benchmarks.peers.documented_path:Documented",
                    "--host", "127.0.0.1", "--port", str(port)], env,
                   Path(work) / f"documented-{port}.log", True, ROOT)
    return Proc(popen, f"http://127.0.0.1:{port}", "/readyz", log=Path(work) /
                f"documented-{port}.log")


def start_peer(encoder: Path, work: Path) -> Proc:
    port = free_port()
    popen = _spawn([str(BIN / "uvicorn"), "benchmarks.peers.naive_encode:app", "--host",
                    "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                   {"VAE_PEER_MODEL": str(encoder)}, work / "peer.log")
    return Proc(popen, f"http://127.0.0.1:{port}", "/encode", any_answer=True)


def descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for c in task.read_text().split():
            out += [int(c), *descendants(int(c))]
    return out


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory of a server's processes (the taskset root excluded), MB by command."""
    found = {}
    for p in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
        except OSError:
            continue
        kb = int(next(line.split()[1] for line in status.splitlines()
                      if line.startswith("VmRSS")))
        found[f"{p} {cmd}"] = round(kb / 1024, 1)
    return found
