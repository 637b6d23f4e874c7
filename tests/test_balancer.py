"""Two replicas behind a real HAProxy (Debian's package) configured by deploy/haproxy/haproxy.cfg
with only addresses and ports substituted, under a bounded load through the balancer (HTTP,
plus gRPC calls): a rolling restart (each replica drained by SIGTERM and replaced on the same
ports) and the loss of a replica (SIGKILL) cost no request. The short version of `make chaos`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import ROOT, free_port
from support.servers import Proc, start_service

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(),
                                reason="haproxy is not installed (make system-deps)")


class Replicas:
    """Two replicas on fixed loopback ports (a restart reuses them), one shared repository."""

    def __init__(self, repo: Path, work: Path):
        self.repo, self.work = repo, work
        self.ports = [(free_port(), free_port()) for _ in range(2)]
        self.procs: list[Proc | None] = [None, None]

    def start(self, i: int) -> Proc:
        http, grpc_port = self.ports[i]
        env = {"VAE_MODEL_REPOSITORY": str(self.repo), "VAE_MODEL_NAME": "digits",
               "VAE_GRPC_PORT": str(grpc_port), "VAE_DRAIN_S": "2"}
        proc = start_service(env, self.work, port=http)
        proc.wait_ready()
        self.procs[i] = proc
        return proc

    def env(self) -> dict[str, str]:
        (h1, g1), (h2, g2) = self.ports
        return {"R1_HOST": "127.0.0.1", "R1_HTTP": str(h1), "R1_GRPC": str(g1),
                "R2_HOST": "127.0.0.1", "R2_HTTP": str(h2), "R2_GRPC": str(g2)}


@pytest.fixture(scope="module")
def cluster(trained, tmp_path_factory):
    work = tmp_path_factory.mktemp("balancer")
    reps = Replicas(trained["repository"], work)
    for i in (0, 1):
        reps.start(i)
    lb_http, lb_grpc = free_port(), free_port()
    env = {**os.environ, **reps.env(), "LB_HOST": "127.0.0.1", "LB_HTTP_PORT": str(lb_http),
           "LB_GRPC_PORT": str(lb_grpc)}
    lb = subprocess.Popen([HAPROXY, "-db", "-f", str(ROOT / "deploy/haproxy/haproxy.cfg")],
                          env=env, stdout=open(work / "haproxy.log", "wb"),
                          stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{lb_http}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    try:
        yield reps, url, f"127.0.0.1:{lb_grpc}"
    finally:
        lb.terminate()
        lb.wait(10)
        for p in reps.procs:
            if p is not None:
                p.stop()


class Load:
    """Seeded /sample calls through the balancer from a few threads; every answer recorded."""

    def __init__(self, url: str, threads: int = 3):
        self.url, self.results, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=30) as c:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.post(self.url + "/sample", json={"n": 2, "seed": i})
                    ok, version = r.status_code == 200, r.headers.get("x-model-version")
                except httpx.HTTPError as exc:
                    ok, version = False, type(exc).__name__
                self.results.append((ok, time.perf_counter() - t0, version))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def report(self) -> str:
        lat = np.array([s for _, s, _ in self.results])
        fails = sum(not ok for ok, _, _ in self.results)
        return (f"{len(self.results)} requests, {fails} failed, "
                f"p99 {np.percentile(lat, 99) * 1000:.0f} ms")


def _grpc_sample(address: str) -> None:
    import tritonclient.grpc as tg

    with tg.InferenceServerClient(address) as client:
        n = tg.InferInput("n", [1], "INT32")
        n.set_data_from_numpy(np.array([2], np.int32))
        assert client.infer("sample", [n]).as_numpy("x").shape[0] == 2


def test_rolling_restart_costs_nothing(cluster):
    reps, url, grpc_address = cluster
    with Load(url) as load:
        time.sleep(2)
        for i in (0, 1):  # drain (SIGTERM), wait for the exit, replace on the same ports
            reps.procs[i].proc.send_signal(signal.SIGTERM)
            assert reps.procs[i].proc.wait(timeout=30) == 0
            reps.start(i)
            time.sleep(2.5)  # the balancer's health check marks it up (rise 2, inter 1 s)
            _grpc_sample(grpc_address)
    print("rolling restart:", load.report())
    assert load.results and all(ok for ok, _, _ in load.results), load.report()


def test_replica_loss_costs_nothing(cluster):
    reps, url, grpc_address = cluster
    with Load(url) as load:
        time.sleep(2)
        reps.procs[1].proc.send_signal(signal.SIGKILL)  # no drain: the process is gone
        os.killpg(reps.procs[1].proc.pid, signal.SIGKILL)
        reps.procs[1].proc.wait(10)
        time.sleep(4)
        _grpc_sample(grpc_address)
        reps.start(1)
        time.sleep(2.5)
    print("replica loss:", load.report())
    assert load.results and all(ok for ok, _, _ in load.results), load.report()
