"""The loads `make chaos` drives while it breaks things, each keeping every call it made:
start time, latency, success, the model version that answered and (HTTP) the replica.

- HttpLoad: locust (loadtests/locustfile.py, MixUser) in its own process, paced at a target
  rate, every request written by its `--record` option;
- GrpcLoad: tritonclient gRPC clients, one channel each, paced at a target rate;
- ClientLoad: the project's Python client (service/client.py), whose retries are the subject.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def summary(calls: list[dict]) -> dict:
    """Requests, failures, p99 and the distinct errors of a list of recorded calls."""
    ms = np.array([c["ms"] for c in calls]) if calls else np.zeros(1)
    errors: dict[str, int] = {}
    for c in calls:
        if not c["ok"]:
            errors[c["error"]] = errors.get(c["error"], 0) + 1
    span = (max(c["t"] for c in calls) - min(c["t"] for c in calls)) if len(calls) > 1 else 0
    return {"requests": len(calls), "failed": sum(not c["ok"] for c in calls),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "rps": round(len(calls) / span, 1) if span else 0.0, "errors": errors}


class MachineTooBusy(RuntimeError):
    """The machine was too busy for a measurement to mean anything (said, never a crash)."""


class HttpLoad:
    """`locust --headless` against `host` until stopped (SIGTERM: locust's own clean exit)."""

    def __init__(self, host: str, work: Path, target_rps: float = 0.0, users: int = 16,
                 classes: tuple[str, ...] = ("MixUser",)):
        self.record = Path(work) / f"locust-{time.monotonic_ns()}.jsonl"
        self.cmd = [str(BIN / "locust"), "-f", str(ROOT / "loadtests" / "locustfile.py"),
                    "--headless", "-u", str(users), "-r", str(users), "-t", "3600s",
                    "--host", host, "--only-summary", "--stop-timeout", "10",
                    "--target-rps", str(target_rps), "--record", str(self.record),
                    "--loglevel", "WARNING", *classes]
        self.log = Path(work) / "locust.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> HttpLoad:
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def wait_started(self, timeout: float = 120.0) -> float:
        """Block until locust has had its first answer (on a busy machine starting locust and
        its users takes seconds); -> the seconds waited. MachineTooBusy past `timeout`."""
        t0 = time.monotonic()
        marker = Path(f"{self.record}.started")
        while not marker.exists():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"locust exited early: {self.log.read_text()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                raise MachineTooBusy(f"locust sent no request within {timeout:g} s")
            time.sleep(0.05)
        return time.monotonic() - t0

    def calls(self) -> list[dict]:
        if not self.record.exists():
            raise RuntimeError(f"locust wrote no record: {self.log.read_text()[-2000:]}")
        return [json.loads(line) for line in self.record.read_text().splitlines()]


class _Threads:
    """Threads calling `one(i) -> version` at `rate` calls/s in all, until stopped."""

    def __init__(self, threads: int, rate: float):
        self.n, self.rate, self.stop = threads, rate, threading.Event()
        self.records: list[dict] = []
        self.pool = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def setup(self, i: int) -> None: ...

    def one(self, i: int) -> str | None:
        raise NotImplementedError

    def _run(self, i: int) -> None:
        self.setup(i)
        period = self.n / self.rate if self.rate > 0 else 0.0
        next_at = time.monotonic()
        while not self.stop.is_set():
            t, t0 = time.time(), time.perf_counter()
            try:
                version, ok, err = self.one(i), True, None
            except Exception as exc:  # noqa: BLE001 - every failure is what we count
                version, ok, err = None, False, f"{type(exc).__name__}: {str(exc)[:160]}"
            self.records.append({"t": t, "ms": (time.perf_counter() - t0) * 1000, "ok": ok,
                                 "version": version, "error": err, "thread": i})
            next_at += period
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self):
        for t in self.pool:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.pool:
            t.join()

    def calls(self) -> list[dict]:
        return list(self.records)


class GrpcLoad(_Threads):
    """KServe V2 ModelInfer over gRPC: `sample` and `encoder` calls in turn, one tritonclient
    (one channel) per thread."""

    def __init__(self, address: str, shape: list[int], threads: int = 4, rate: float = 50.0):
        super().__init__(threads, rate)
        self.address, self.shape = address, shape
        self.clients: dict[int, object] = {}
        self.x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)

    def setup(self, i: int) -> None:
        import tritonclient.grpc as tg

        self.clients[i] = tg.InferenceServerClient(self.address)

    def one(self, i: int) -> str | None:
        import tritonclient.grpc as tg

        if len(self.records) % 2:
            x = tg.InferInput("x", list(self.x.shape), "FP32")
            x.set_data_from_numpy(self.x)
            result = self.clients[i].infer("encoder", [x], client_timeout=30)
        else:
            n, seed = tg.InferInput("n", [1], "INT32"), tg.InferInput("seed", [1], "INT64")
            n.set_data_from_numpy(np.array([2], np.int32))
            seed.set_data_from_numpy(np.array([i], np.int64))
            result = self.clients[i].infer("sample", [n, seed], client_timeout=30)
        return result.get_response().model_version

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for c in self.clients.values():
            c.close()


class ClientLoad(_Threads):
    """Seeded /sample calls through service.client.VAEClient (its retries on), per thread."""

    def __init__(self, url: str, threads: int = 4, rate: float = 50.0):
        super().__init__(threads, rate)
        self.url, self.clients = url, {}

    def setup(self, i: int) -> None:
        from service.client import VAEClient

        self.clients[i] = VAEClient(self.url)

    def one(self, i: int) -> str | None:
        self.clients[i].sample(2, seed=i)
        return None

    def retries(self) -> int:
        return sum(c.retries for c in self.clients.values())

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for c in self.clients.values():
            c.close()
