"""service/metrics.py's held-back writers give the same series as writing every observation,
inside the event loop (flushed within a tick or on demand) and outside it (written at once)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.metrics import HELD_BACK, LazyCounter, LazyGauge, LazyHistogram, flush_metrics

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0005, 0.001, 0.002, 0.01, 0.5, 3.0, 0.0, 0.1, 7.5, 0.0099]


def _pair():
    out = []
    for _ in range(2):
        reg = CollectorRegistry()
        out.append((reg, Counter("c", "c", ["a"], registry=reg).labels("x"),
                    Histogram("h", "h", ["a"], buckets=BUCKETS, registry=reg).labels("x"),
                    Gauge("g", "g", ["a"], registry=reg).labels("x")))
    return out


def _same(direct, lazy) -> None:
    def lines(reg):  # _created timestamps differ by construction
        return [ln for ln in generate_latest(reg).splitlines() if b"_created" not in ln]
    assert len(lines(direct[0])) > 10 and lines(direct[0]) == lines(lazy[0])


def test_lazy_writers_match_direct_writes_in_and_out_of_the_loop():
    direct, lazy = _pair()
    counter, hist, gauge = LazyCounter(lazy[1]), LazyHistogram(lazy[2]), LazyGauge(lazy[3])
    for v in VALUES:
        direct[1].inc(2)
        direct[2].observe(v)
    direct[3].set(1)

    async def in_loop() -> None:
        for v in VALUES[:5]:
            counter.inc(2)
            hist.observe(v)
        gauge.inc()
        gauge.inc()
        gauge.dec()
        assert lazy[2]._sum.get() == 0  # held back
        await asyncio.sleep(HELD_BACK.tick * 2)  # the loop's flush writes them
        assert lazy[2]._sum.get() > 0 and not HELD_BACK.scheduled
        for v in VALUES[5:]:
            counter.inc(2)
            hist.observe(v)
        flush_metrics()  # before /metrics renders

    asyncio.run(in_loop())
    _same(direct, lazy)
    counter.inc(2)  # outside a loop: written at once
    hist.observe(0.02)
    direct[1].inc(2)
    direct[2].observe(0.02)
    _same(direct, lazy)


def test_observe_many_is_observe_of_each_in_and_out_of_the_loop():
    direct, lazy = _pair()
    hist = LazyHistogram(lazy[2])
    for v in VALUES + VALUES[:3]:
        direct[2].observe(v)

    async def in_loop() -> None:
        hist.observe_many(VALUES)
        assert lazy[2]._sum.get() == 0  # held back with one mark
        flush_metrics()

    asyncio.run(in_loop())
    hist.observe_many(VALUES[:3])  # outside a loop: written at once
    _same(direct, lazy)
