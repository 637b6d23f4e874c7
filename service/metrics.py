"""The service's own Prometheus series (prefix vae_), served at /metrics by the front door
(or by BentoML's route with VAE_BENTOML_METRICS=true).

`bentoml serve` sets PROMETHEUS_MULTIPROC_DIR before workers start, so these prometheus_client
objects write per-process files that /metrics merges across workers. Gauges therefore declare a
multiprocess mode, and Info/Enum (unsupported there) are expressed as a labelled gauge.
Per-request series are written through Lazy* holders: at most 0.1 s late, never lost.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import os
from collections import Counter as Counter_
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Buckets reach past 10 s: a large batch on a busy CPU is slow, and it must still be visible.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 20.0, 30.0, 60.0)

# protocol: "http" (the JSON API and V2 REST on the HTTP port) or "grpc". V2 calls carry their
# REST route as endpoint on both, with the V2 model's operation only (/v2/models/encoder/infer
# also for digits.encoder); status is the HTTP status, or the gRPC code name (OK,
# INVALID_ARGUMENT, ...) for grpc. model: the served model that answered ("" for calls that
# concern no model, such as /metrics, or name an unknown one: the label stays bounded).
REQUESTS = Counter("vae_requests", "Requests answered, by endpoint, status, protocol and model",
                   ["endpoint", "status", "protocol", "model"])
LATENCY = Histogram("vae_request_duration_seconds", "Time from request to response",
                    ["endpoint", "protocol", "model"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("vae_requests_in_flight", "Requests being processed now",
                  ["endpoint", "protocol", "model"], multiprocess_mode="livesum")
ITEMS = Counter("vae_items", "Items (rows) processed", ["endpoint", "protocol", "model"])
MODEL_INFO = Gauge("vae_model_info", "Loaded model versions (value 1), with their identity",
                   ["name", "version", "encoder_sha256", "decoder_sha256", "provider"],
                   multiprocess_mode="max")
MODEL_LOAD_SECONDS = Gauge("vae_model_load_seconds", "Time to load, verify and warm a version",
                           ["name", "version"], multiprocess_mode="max")
ERRORS = Counter("vae_errors", "Error answers by endpoint, reason, protocol and model",
                 ["endpoint", "reason", "protocol", "model"])
# Health, readiness and scrape calls: counted here only, never as API traffic, so a draining
# replica's /readyz 503s are not errors, probes do not dilute the error ratios and a scrape
# does not count itself in flight (docs/API.md, "Metrics")
PROBES = Counter("vae_probes", "Health, readiness and /metrics answers (not API requests), by "
                 "endpoint, status and protocol", ["endpoint", "status", "protocol"])
PROBE_ENDPOINTS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live",
                             "/v2/health/ready"})


def is_probe(endpoint: str) -> bool:
    """A health, readiness or scrape endpoint (V2's per-model /ready included)."""
    return endpoint in PROBE_ENDPOINTS or (endpoint.startswith("/v2/models/")
                                           and endpoint.endswith("/ready"))


# One batcher per model, version and graph: these are by model and graph
BATCH_ROWS = Histogram("vae_batch_rows", "Rows in one onnxruntime run, by model and graph",
                       ["model", "graph"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096))
BATCH_REQUESTS = Histogram("vae_batch_requests", "Requests merged into one run, by model and "
                           "graph", ["model", "graph"],
                           buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128))
QUEUE_SECONDS = Histogram("vae_queue_wait_seconds", "Time a request's rows waited for a run",
                          ["model", "graph"], buckets=LATENCY_BUCKETS)
COMPUTE_SECONDS = Histogram("vae_compute_seconds", "onnxruntime time of one run, by model and "
                            "graph", ["model", "graph"], buckets=LATENCY_BUCKETS)


class _HeldBack:
    """Observations made in the serving event loop, kept in memory and written to the
    multiprocess files together at most `tick` seconds later (and before this worker renders
    /metrics). Each prometheus_client write to those files takes a lock and packs into an
    mmap; a one-item /encode made eight (docs/BENCHMARKS.md, P2)."""

    def __init__(self, tick: float = 0.1):
        self.tick = tick
        self.dirty: set[Any] = set()
        self.scheduled: asyncio.AbstractEventLoop | None = None  # the loop that will flush

    def mark(self, holder: Any) -> bool:
        """Queue holder's flush; False outside the loop's thread (then write at once)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self.dirty.add(holder)
        if self.scheduled is not loop:  # (a loop that closed before its flush is forgotten)
            self.scheduled = loop
            loop.call_later(self.tick, self.flush)
        return True

    def flush(self) -> None:
        self.scheduled = None
        dirty, self.dirty = self.dirty, set()
        for holder in dirty:
            holder.flush()


HELD_BACK = _HeldBack()


def flush_metrics() -> None:
    """Write what this process holds back (call from its event loop thread)."""
    HELD_BACK.flush()


class LazyCounter:
    """A Counter child whose increments inside the event loop are added up before writing."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any):
        self.child, self.pending = child, 0.0

    def inc(self, amount: float = 1) -> None:
        if HELD_BACK.mark(self):
            self.pending += amount
        else:
            self.child.inc(amount)

    def flush(self) -> None:
        amount, self.pending = self.pending, 0.0
        if amount:
            self.child.inc(amount)


class LazyHistogram:
    """A Histogram child observed in batches: the sum and each bucket written once per flush
    (what Histogram.observe writes per value, through the same value objects).

    prometheus_client has no public batched observe, so flush() writes the child's
    `_upper_bounds`, `_sum` and `_buckets`: prometheus-client is pinned to one version
    (pyproject.toml), and tests/test_metrics_logic.py compares these writes with observe()'s,
    so a release that changes them fails there before it is allowed in."""

    __slots__ = ("child", "values")

    def __init__(self, child: Any):
        self.child, self.values = child, []

    def observe(self, amount: float) -> None:
        if HELD_BACK.mark(self):
            self.values.append(amount)
        else:
            self.child.observe(amount)

    def observe_many(self, amounts: list[float]) -> None:
        """observe() of each, held back with one mark (a batch's queue times)."""
        if HELD_BACK.mark(self):
            self.values.extend(amounts)
        else:
            for amount in amounts:
                self.child.observe(amount)

    def flush(self) -> None:
        values, self.values = self.values, []
        if not values:
            return
        bounds, counts = self.child._upper_bounds, Counter_()
        for v in values:  # Histogram.observe: the first bucket with amount <= bound
            if v == v:  # NaN: in no bucket, as observe() does
                counts[bisect.bisect_left(bounds, v)] += 1
        self.child._sum.inc(math.fsum(values))
        for i, n in counts.items():  # the last bound is +Inf: every number has a bucket
            self.child._buckets[i].inc(n)


class LazyGauge:
    """An in-flight gauge: the loop's count lives here, the files get it at each flush. Used
    from the loop (HTTP series) or from threads (gRPC series, written at once), not both."""

    __slots__ = ("child", "value")

    def __init__(self, child: Any):
        self.child, self.value = child, 0

    def inc(self) -> None:
        if HELD_BACK.mark(self):
            self.value += 1
        else:
            self.child.inc()

    def dec(self) -> None:
        if HELD_BACK.mark(self):
            self.value -= 1
        else:
            self.child.dec()

    def flush(self) -> None:
        self.child.set(self.value)


class _Series:
    """One endpoint's metric children for one model, looked up once instead of on every
    request."""

    def __init__(self, endpoint: str, protocol: str, model: str):
        self.endpoint, self.protocol, self.model = endpoint, protocol, model
        self.in_flight = LazyGauge(IN_FLIGHT.labels(endpoint, protocol, model))
        self.latency = LazyHistogram(LATENCY.labels(endpoint, protocol, model))
        self._errors: dict[str, Any] = {}
        self._requests: dict[object, LazyCounter] = {}
        self._items: LazyCounter | None = None

    @property
    def items(self) -> LazyCounter:
        """The vae_items child, created on first use (no zero series for other routes)."""
        if self._items is None:
            self._items = LazyCounter(ITEMS.labels(self.endpoint, self.protocol, self.model))
        return self._items

    def requests(self, status: object) -> LazyCounter:
        if status not in self._requests:
            self._requests[status] = LazyCounter(REQUESTS.labels(
                self.endpoint, str(status), self.protocol, self.model))
        return self._requests[status]

    def errors(self, reason: str) -> Any:
        if reason not in self._errors:
            self._errors[reason] = ERRORS.labels(self.endpoint, reason, self.protocol,
                                                 self.model)
        return self._errors[reason]


_SERIES: dict[tuple[str, str, str], _Series] = {}
_PROBES: dict[tuple[str, object, str], LazyCounter] = {}


def count_probe(endpoint: str, status: object, protocol: str) -> None:
    key = (endpoint, status, protocol)
    if key not in _PROBES:
        _PROBES[key] = LazyCounter(PROBES.labels(endpoint, str(status), protocol))
    _PROBES[key].inc()


def series(endpoint: str, protocol: str = "http", model: str = "") -> _Series:
    """Endpoint labels are bounded (known routes, V2 templates, "other"), model labels too
    (served names, ""), so is this cache."""
    key = (endpoint, protocol, model)
    if key not in _SERIES:  # (gRPC threads may race here: setdefault keeps one)
        return _SERIES.setdefault(key, _Series(endpoint, protocol, model))
    return _SERIES[key]


def init_series(model: str, endpoints: dict[str, list[str]], reasons: list[str]) -> None:
    """Zero series for a served model: every error reason and the success status of every API
    endpoint, per protocol ({protocol: endpoints}). A labelled series otherwise appears on first
    use, and rate()/increase() cannot see the step from nothing to its first count, so the
    first errors of a kind would never reach an alert."""
    for protocol, names in endpoints.items():
        ok = "200" if protocol == "http" else "OK"
        for endpoint in names:
            REQUESTS.labels(endpoint, ok, protocol, model)
            for reason in reasons:
                ERRORS.labels(endpoint, reason, protocol, model)


def forget_model(model: str) -> None:
    """A retired model's cached children go (its series stay in the files: counters keep
    their totals, as Prometheus expects)."""
    for key in [k for k in _SERIES if k[2] == model]:
        _SERIES.pop(key, None)


def render_metrics() -> bytes:
    """The Prometheus text of every worker's series (what BentoML's /metrics route gave when
    its own metrics were on): the multiprocess files under PROMETHEUS_MULTIPROC_DIR, which
    `bentoml serve` always sets, else this process's registry."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
