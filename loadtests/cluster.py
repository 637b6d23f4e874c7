"""Two replicas of the service behind a real HAProxy, on loopback: what `make chaos` and
tests/test_chaos.py act on. The balancer runs deploy/haproxy/haproxy.cfg as shipped, with only
addresses and ports substituted (through the environment, as a VM deployment would); the
replicas are separate `bentoml serve` processes sharing one model repository, each restarted
on the ports the balancer expects.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc
import httpx

from support.servers import Proc, descendants, free_port, kill_all, start_service

ROOT = Path(__file__).resolve().parents[1]
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SERVER_READY = "/inference.GRPCInferenceService/ServerReady"  # KServe V2


class Cluster:
    """Replicas r1 and r2 (fixed loopback ports) and the balancer in front of them."""

    def __init__(self, repository: Path, model: str, work: Path, drain_s: float = 2.0,
                 poll_s: float = 1.0, models: str = "", replica_env: dict | None = None,
                 lb_env: dict | None = None):
        """models: VAE_MODELS of the replicas (e.g. `*`), `model` then being the default;
        replica_env, lb_env: more environment for the replicas and for HAProxy."""
        self.repository, self.model, self.work = Path(repository), model, Path(work)
        self.models = models
        self.replica_env, self.lb_env = replica_env or {}, lb_env or {}
        self.drain_s, self.poll_s = drain_s, poll_s
        self.ports = [(free_port(), free_port()) for _ in range(2)]
        self.replicas: list[Proc | None] = [None, None]
        self.lb_http, self.lb_grpc = free_port(), free_port()
        self.lb: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_http}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.lb_grpc}"

    def start_replica(self, i: int, workers: int = 1) -> Proc:
        http, grpc_port = self.ports[i]
        env = {"VAE_MODEL_REPOSITORY": str(self.repository), "VAE_MODEL_NAME": self.model,
               "VAE_GRPC_PORT": str(grpc_port), "VAE_DRAIN_S": str(self.drain_s),
               "VAE_REPOSITORY_POLL_S": str(self.poll_s), "VAE_WORKERS": str(workers)}
        if self.models:
            env |= {"VAE_MODELS": self.models, "VAE_DEFAULT_MODEL": self.model}
        proc = start_service(env | self.replica_env, self.work, port=http)
        try:
            proc.wait_ready()
        except BaseException:
            proc.stop()
            raise
        self.replicas[i] = proc
        return proc

    def drain_replica(self, i: int, timeout: float = 60.0) -> int:
        """SIGTERM to `bentoml serve` (as Kubernetes or systemd stops it); its exit code."""
        proc = self.replicas[i].proc
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def kill_replica(self, i: int) -> None:
        """SIGKILL to every process of the replica at once (as when its container or VM dies):
        no drain, no goodbye. BentoML's workers are not in the arbiter's process group."""
        proc = self.replicas[i].proc
        kill_all([proc.pid, *self.workers(i)])
        proc.wait(10)

    def workers(self, i: int) -> list[int]:
        """PIDs of the replica's BentoML worker processes (under its arbiter)."""
        found = []
        for pid in descendants(self.replicas[i].proc.pid):
            try:
                if b"_bentoml_impl.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
        return sorted(found)

    def env(self) -> dict[str, str]:
        (h1, g1), (h2, g2) = self.ports
        return {"LB_HOST": "127.0.0.1", "LB_HTTP_PORT": str(self.lb_http),
                "LB_GRPC_PORT": str(self.lb_grpc),
                "R1_HOST": "127.0.0.1", "R1_HTTP": str(h1), "R1_GRPC": str(g1),
                "R2_HOST": "127.0.0.1", "R2_HTTP": str(h2), "R2_GRPC": str(g2)}

    def start(self) -> Cluster:
        for i in (0, 1):
            self.start_replica(i)
        self.lb = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(ROOT / "deploy/haproxy/haproxy.cfg")],
            env={**os.environ, **self.env(), **self.lb_env},
            stdout=open(self.work / "haproxy.log", "ab"), stderr=subprocess.STDOUT)
        self.wait_both_up()
        return self

    def wait_both_up(self, timeout: float = 30.0) -> None:
        """Until the balancer has sent to both replicas through each of its backends, HTTP
        and gRPC: each backend checks its servers on its own, so a replica back in one can
        still be out of the other (a rolling restart that went on then found no gRPC server)."""
        http: set[str] = set()
        grpc_seen: set[str] = set()
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.grpc_address) as channel:
            ready = channel.unary_unary(SERVER_READY, request_serializer=bytes,
                                        response_deserializer=bytes)
            while len(http) < 2 or len(grpc_seen) < 2:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the balancer reached only {sorted(http)} over HTTP and "
                        f"{sorted(grpc_seen)} over gRPC: "
                        f"{(self.work / 'haproxy.log').read_text()[-2000:]}")
                try:
                    r = httpx.get(self.url + "/readyz", timeout=2)
                    if r.status_code == 200:
                        http.add(r.headers.get("x-served-by", ""))
                except httpx.HTTPError:
                    pass
                try:  # an empty ServerReadyRequest; the answer's metadata names the replica
                    _, call = ready.with_call(b"", timeout=2)
                    grpc_seen.update(v for k, v in call.initial_metadata() or ()
                                     if k == "x-served-by")
                except grpc.RpcError:
                    pass
                time.sleep(0.1)

    def stop(self) -> None:
        if self.lb is not None:
            self.lb.terminate()
            self.lb.wait(10)
        for p in self.replicas:
            if p is not None:
                p.stop()

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
