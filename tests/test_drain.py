"""Draining on SIGTERM (service/lifecycle/drain.py), on the real server: not ready at once on
every door (/readyz 503, V2 ready false, gRPC health NOT_SERVING), live, still serving every
request for VAE_DRAIN_S, then a clean exit (0) with the requests in flight answered. And the
framework detail it rests on: the SIGTERM handler it wraps is uvicorn's."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import ROOT, Server

UVICORN_PROBE = """
import asyncio, signal, uvicorn
from service.lifecycle.drain import Drain
found = {}
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        found["handler"] = Drain().install(5.0)
        found["now"] = signal.getsignal(signal.SIGTERM)
        await send({"type": "lifespan.startup.complete"})
        server.should_exit = True
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
server.run()
h = found["handler"]
print(type(getattr(h, "__self__", None)).__name__, getattr(h, "__name__", ""),
      found["now"].__name__)
"""


def test_the_handler_wrapped_is_uvicorns_exit():
    """Fails when uvicorn stops installing Server.handle_exit with signal.signal before the
    app starts: then drain.py needs another way in."""
    out = subprocess.run([sys.executable, "-c", UVICORN_PROBE], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Server", "handle_exit", "on_sigterm"], out.stdout


def _grpc_health(address: str) -> int:
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


DRAIN_S = 5


@pytest.fixture(scope="module")
def draining(trained):
    """A server sent SIGTERM with VAE_DRAIN_S=5; what it answered while draining."""
    srv = Server(trained["repository"], {"VAE_DRAIN_S": str(DRAIN_S)})
    with srv:
        url = srv.url
        before = _grpc_health(srv.grpc_url)
        seen: dict = {"encode": [], "readyz": [], "livez": []}
        stop = threading.Event()

        def load() -> None:  # requests all through the drain
            while not stop.is_set():
                try:
                    r = httpx.post(url + "/sample", json={"n": 1, "seed": 0}, timeout=10)
                    seen["encode"].append(r.status_code)
                except httpx.HTTPError as exc:
                    seen["encode"].append(type(exc).__name__)

        t = threading.Thread(target=load)
        t.start()
        time.sleep(0.3)
        seen["metrics_before"] = _counters(url)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        seen["readyz"] = httpx.get(url + "/readyz", timeout=5).status_code
        seen["livez"] = httpx.get(url + "/livez", timeout=5).status_code
        seen["v2_ready"] = httpx.get(url + "/v2/health/ready", timeout=5).status_code
        seen["grpc_health"] = _grpc_health(srv.grpc_url)
        for _ in range(5):  # a balancer's health checks, several times over
            httpx.get(url + "/readyz", timeout=5)
        seen["metrics_draining"] = _counters(url)
        time.sleep(max(0.0, t0 + 2.5 - time.monotonic()))  # well inside the drain
        seen["late_at"] = time.monotonic() - t0
        seen["late"] = None if seen["late_at"] > DRAIN_S - 0.5 else httpx.post(
            url + "/sample", json={"n": 1}, timeout=10).status_code  # (None: too busy)
        seen["code"] = srv.proc.wait(timeout=30)
        seen["exit_s"] = time.monotonic() - t0
        stop.set()
        t.join()
    seen["before"] = before
    return seen


def _counters(url: str) -> dict[tuple, float]:
    """Every vae_ counter sample of /metrics: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) if fam.type == "counter"
            for s in fam.samples if s.name.endswith("_total")}


def test_draining_moves_no_error_counter(draining):
    """/readyz's 503s while draining are probes' answers, not API errors: no vae_errors_total
    series and no non-2xx vae_requests_total series moves; vae_probes_total counts them."""
    before, during = draining["metrics_before"], draining["metrics_draining"]
    moved = {k: during[k] - before.get(k, 0.0) for k in during
             if during[k] != before.get(k, 0.0)}
    errors = {k: v for k, v in moved.items() if k[0] == "vae_errors_total" or (
        k[0] == "vae_requests_total" and not dict(k[1])["status"].startswith("2"))}
    assert not errors, errors
    probes = {dict(k[1])["endpoint"]: v for k, v in moved.items()
              if k[0] == "vae_probes_total" and dict(k[1])["status"] == "503"}
    assert probes.get("/readyz", 0) >= 6 and probes.get("/v2/health/ready", 0) >= 1, moved
    assert not any(dict(k[1])["endpoint"] in ("/readyz", "/livez", "/metrics")
                   for k in during if k[0] == "vae_requests_total"), "probes counted as API"


def test_not_ready_at_once_but_live_and_serving(draining):
    assert draining["before"] == health_pb2.HealthCheckResponse.SERVING
    assert draining["readyz"] == 503 and draining["v2_ready"] == 503
    assert draining["livez"] == 200
    assert draining["grpc_health"] == health_pb2.HealthCheckResponse.NOT_SERVING
    if draining["late"] is None:
        pytest.skip(f"the machine was too busy: the drain's checks took {draining['late_at']:.1f}"
                    f" s of its {DRAIN_S} s")
    assert draining["late"] == 200


def test_exits_cleanly_after_the_drain(draining):
    assert draining["code"] == 0
    assert DRAIN_S <= draining["exit_s"] < DRAIN_S + 10, draining["exit_s"]
    # every request sent before the server stopped listening was answered 200; after the
    # exit only connection errors can occur (nothing listens), never a 5xx
    codes = draining["encode"]
    answered = [c for c in codes if isinstance(c, int)]
    assert answered and set(answered) == {200}, codes
    first_error = next((i for i, c in enumerate(codes) if not isinstance(c, int)), len(codes))
    assert all(not isinstance(c, int) for c in codes[first_error:]), codes


def test_workers_of_a_killed_arbiter_drain_and_exit(trained):
    """BentoML's workers live outside the arbiter's process group: SIGKILL of `bentoml serve`
    alone used to leave its worker serving the port, unsupervised. Now it notices, drains (not
    ready, still serving) and exits, and the port is free for a new replica. Another instance
    starting meanwhile (its sweep of killed instances' metrics directories) leaves the orphaned
    worker's directory alone: its answers would fail on the missing files."""
    import tempfile

    from service.serve import _sweep_stale
    from support.servers import descendants

    srv = Server(trained["repository"], {"VAE_DRAIN_S": "2"})
    with srv:
        workers = descendants(srv.proc.pid)
        assert workers
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(10)
        t0 = time.monotonic()
        _sweep_stale(Path(tempfile.gettempdir()))  # what every start of `vae-serve` does
        time.sleep(1.5)  # the watch looks every second
        assert httpx.get(srv.url + "/readyz", timeout=5).status_code == 503
        assert httpx.post(srv.url + "/sample", json={"n": 1}, timeout=10).status_code == 200
        while any(Path(f"/proc/{p}").exists() for p in workers):
            assert time.monotonic() - t0 < 20, "the orphaned worker did not exit"
            time.sleep(0.1)
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/readyz", timeout=5)
