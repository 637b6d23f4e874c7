"""One request's lifecycle, the same for HTTP and gRPC: its ID, the shared concurrency limit,
its metrics series, the error table (service/errors.py) and the access log line.

    call = Call(endpoint, "http", request_id, method, path)   # in flight from here
    call.admit()                                             # API calls: 429 past the limit
    ...
    call.finish(200)  # or finish(status, kind) after an error: counted, logged, released
"""

from __future__ import annotations

import itertools
import os
import re
import time

from service.errors import KIND_OF_GRPC, KINDS, ApiError, kind_of_status
from service.lifecycle.accesslog import ACCESS_LOG
from service.lifecycle.admission import ADMISSION
from service.metrics import count_probe, is_probe, series
from service.operations.v2 import MODELS

# Generated request IDs: 32 hex digits, a random half per process and a counter (unique
# without a getrandom call per request)
_RID_PREFIX, _RIDS = os.urandom(8).hex(), itertools.count(1)
_V2_MODEL = re.compile(r"/v2/models/([^/]+)(?:/versions/[^/]+)?(?:/(ready|infer))?")
_V2_LOAD = re.compile(r"/v2/repository/models/[^/]+/(load|unload)")
V2_FIXED = ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/repository/index")


def request_id(given: bytes | str | None) -> str:
    """The client's X-Request-ID (at most 128 characters), or a new one."""
    if isinstance(given, bytes):
        given = given.decode("latin-1")
    return given[:128] if given else f"{_RID_PREFIX}{next(_RIDS):016x}"


def v2_endpoint(path: str) -> str | None:
    """The metrics label of a V2 route (bounded: the V2 model's operation only, `m.encoder` as
    `encoder`, whose model is the call's `model` label; names outside MODELS become "unknown",
    versions are dropped); None if the path is not a V2 route. gRPC RPCs use the same labels."""
    p = path.rstrip("/")
    if p in V2_FIXED:
        return p
    if m := _V2_MODEL.fullmatch(p):
        op = m[1].rpartition(".")[2]
        model = op if op in MODELS else "unknown"
        return f"/v2/models/{model}" + (f"/{m[2]}" if m[2] else "")
    if m := _V2_LOAD.fullmatch(p):
        return f"/v2/repository/models/{{model}}/{m[1]}"
    return None


class Call:
    __slots__ = ("endpoint", "protocol", "rid", "method", "path", "t0", "series", "admitted",
                 "log", "model", "probe")

    def __init__(self, endpoint: str, protocol: str, rid: str, method: str, path: str,
                 access_log: bool, model: str = ""):
        """model: the label to start with (a model call: the default model, so that the
        common call that names none is never relabelled; others "")."""
        self.endpoint, self.protocol, self.rid = endpoint, protocol, rid
        self.method, self.path, self.log = method, path, access_log
        self.t0 = time.perf_counter()
        self.model = model
        self.admitted = False
        # health, readiness and scrapes: vae_probes_total only (metrics.PROBES says why)
        self.probe = is_probe(endpoint)
        if not self.probe:
            self.series = series(endpoint, protocol, model)
            self.series.in_flight.inc()

    def relabel(self, model: str) -> None:
        """The served model this call is about, once resolved (its `model` metrics label)."""
        if model != self.model and not self.probe:
            self.series.in_flight.dec()
            self.model = model
            self.series = series(self.endpoint, self.protocol, model)
            self.series.in_flight.inc()

    def admit(self) -> None:
        """Count this call against the worker's VAE_MAX_CONCURRENCY, or refuse it (429)."""
        if not ADMISSION.try_enter():
            raise ApiError(ADMISSION.refusal(), "concurrency")
        self.admitted = True

    def count_items(self, n: int) -> None:
        if n and not self.probe:
            self.series.items.inc(n)

    def finish(self, status: int | str, kind: str | None = None, peer: str | None = None) -> None:
        """Once per call: `status` is the HTTP status or the gRPC code name; `kind` the error
        kind when an ApiError said it (else derived from the status)."""
        if self.admitted:
            ADMISSION.leave()
        elapsed = time.perf_counter() - self.t0
        if self.probe:
            count_probe(self.endpoint, status, self.protocol)
            self._log(status, elapsed, peer)
            return
        s = self.series
        s.in_flight.dec()
        s.requests(status).inc()
        s.latency.observe(elapsed)
        if kind is None:
            kind = KIND_OF_GRPC.get(status, "internal") if isinstance(status, str) else \
                (kind_of_status(status) if status >= 400 else "")
        if kind:
            s.errors(KINDS[kind].reason).inc()
        self._log(status, elapsed, peer)

    def _log(self, status: int | str, elapsed: float, peer: str | None) -> None:
        if self.log:
            line = {"ts": time.time(), "request_id": self.rid, "method": self.method,
                    "path": self.path, "status": status, "ms": round(1000 * elapsed, 3)}
            if self.model:
                line["model"] = self.model
            if self.protocol != "http":
                line["protocol"] = self.protocol
                line["peer"] = peer
            ACCESS_LOG.write(line)
