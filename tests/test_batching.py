"""Row batching: the batcher alone, then the real server under concurrency and overload."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
import pytest

from conftest import Server
from service.runtime.batching import QueueFull, RowBatcher


def _batcher(max_rows=8, wait_ms=20.0, queue_rows=100, calls=None):
    def run(x):
        if calls is not None:
            calls.append(len(x))
        if np.isnan(x).any():
            raise ValueError("nan in batch")
        return [x * 2, x.sum(axis=1, keepdims=True)]

    return RowBatcher("g", run, max_rows, wait_ms, queue_rows)


def test_concurrent_rows_are_merged_and_split_back():
    calls: list[int] = []

    async def main():
        b = _batcher(calls=calls)
        xs = [np.full((n, 3), i, np.float32) for i, n in enumerate([1, 2, 3, 2])]
        outs = await asyncio.gather(*(b.submit(x) for x in xs))
        for x, (double, total) in zip(xs, outs, strict=True):
            np.testing.assert_array_equal(double, 2 * x)
            np.testing.assert_array_equal(total, x.sum(axis=1, keepdims=True))
        big = await b.submit(np.ones((20, 3), np.float32))  # over max_rows: runs alone
        assert big[0].shape == (20, 3)

    asyncio.run(main())
    assert calls == [8, 20]  # four requests merged into one run


def test_under_load_rows_arriving_in_the_next_turns_join_the_batch():
    """Eager batching (no wait): after a run of 4 rows, requests whose handlers reach the
    queue a turn or two of the loop later join the first one's run instead of a run of their
    own; on a quiet batcher (last run: 1 row) a lone request runs at once."""
    calls: list[int] = []

    async def late(turns: int) -> list[np.ndarray]:
        for _ in range(turns):  # a handler started by a later read of the sockets
            await asyncio.sleep(0)
        return await b.submit(np.ones((1, 3), np.float32))

    async def main():
        await asyncio.gather(*(b.submit(np.ones((1, 3), np.float32)) for _ in range(4)))
        await asyncio.gather(late(0), late(1), late(1), late(2), late(3), late(4))
        await b.submit(np.ones((1, 3), np.float32))  # alone: last run 1 row
        await asyncio.gather(late(0), late(4))

    b = _batcher(wait_ms=0.0, calls=calls)
    asyncio.run(main())
    assert calls == [4, 6, 1, 1, 1]


def test_queue_limit_and_failures():
    async def main():
        b = _batcher(max_rows=100, wait_ms=50.0, queue_rows=5)
        first = asyncio.ensure_future(b.submit(np.ones((4, 3), np.float32)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="VAE_MAX_QUEUE_ROWS"):
            await b.submit(np.ones((2, 3), np.float32))
        assert (await first)[0].shape == (4, 3)
        bad = np.full((1, 3), np.nan, np.float32)
        results = await asyncio.gather(b.submit(bad), b.submit(np.ones((1, 3), np.float32)),
                                       return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)  # one batch, one failure
        assert (await b.submit(np.ones((1, 3), np.float32)))[0].shape == (1, 3)  # still alive

    asyncio.run(main())


def test_short_runs_go_inline_long_runs_to_the_thread():
    import threading
    import time

    async def main(inline_ms: float, work_s: float) -> list[bool]:
        loop_thread, seen = threading.get_ident(), []

        def run(x):
            seen.append(threading.get_ident() == loop_thread)
            time.sleep(work_s)
            return [x]

        b = RowBatcher("g", run, 8, 0.0, 100, inline_max_ms=inline_ms)
        for _ in range(4):
            await b.submit(np.ones((2, 3), np.float32))
        return seen

    # the first run measures (in the thread); a short one is then cheaper in the loop. The
    # bounds leave room for a loaded machine: a thread hop there can take several ms, and load
    # only lengthens the 50 ms run
    assert asyncio.run(main(inline_ms=200.0, work_s=0.0)) == [False, True, True, True]
    assert asyncio.run(main(inline_ms=20.0, work_s=0.05)) == [False] * 4  # too long: thread
    assert asyncio.run(main(inline_ms=0.0, work_s=0.0)) == [False] * 4  # 0: never inline


@pytest.fixture(scope="module")
def tight_server(trained):
    with Server(trained["repository"], {"VAE_MAX_QUEUE_ROWS": "8", "VAE_BATCH_MAX_WAIT_MS":
                                        "300", "VAE_BATCH_MAX_ROWS": "64",
                                        "VAE_MAX_CONCURRENCY": "6"}) as srv:
        yield srv


def _burst(url: str, rows: int, count: int) -> list[httpx.Response]:
    body = {"inputs": np.full((rows, 64), 0.5).tolist()}

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            return await asyncio.gather(*(c.post("/encode", json=body) for _ in range(count)))

    return asyncio.run(main())


@pytest.mark.parametrize("rows,status,setting", [
    (1, 429, "VAE_MAX_CONCURRENCY"),  # 6 one-row requests wait in the queue: the 7th is refused
    (3, 503, "VAE_MAX_QUEUE_ROWS"),  # two 3-row requests fill 6 of 8 queue rows: the 3rd is not
])
def test_overload_answers_with_retry_after(tight_server, rows, status, setting):
    answers = _burst(tight_server.url, rows, 16)
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes and status in codes, codes
    assert not [c for c in codes if c not in (200, 429, 503)], codes
    for r in answers:
        if r.status_code == status:
            assert r.headers["retry-after"] and setting in r.json()["error"]
    assert _burst(tight_server.url, rows, 1)[0].status_code == 200  # full service after


def test_grpc_overload_is_refused_at_once_and_bounded(tight_server):
    """More gRPC calls than VAE_MAX_CONCURRENCY (6) at once: the excess is refused with an
    overload code (grpc's own limit on calls in flight or waiting for a thread, or the shared
    admission), never queued without bound; the rest are answered, and so is the next call."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    def call(_: int) -> str:
        x = tg.InferInput("x", [1, 1, 8, 8], "FP32")
        x.set_data_from_numpy(np.full((1, 1, 8, 8), 0.5, np.float32))
        with tg.InferenceServerClient(tight_server.grpc_url) as g:
            try:
                return "OK" if g.infer("encoder", [x]).as_numpy("mu").shape[0] == 1 else "?"
            except InferenceServerException as exc:
                return str(exc.status())

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(call, range(16)))
    assert "OK" in codes and len(codes) == 16, codes
    refused = [c for c in codes if c != "OK"]
    assert refused and set(refused) <= {"StatusCode.RESOURCE_EXHAUSTED",
                                        "StatusCode.UNAVAILABLE"}, codes
    assert call(0) == "OK"


def test_concurrent_mixed_requests_equal_the_same_requests_alone(trained):
    srv = Server(trained["repository"], {"VAE_BATCH_MAX_WAIT_MS": "20"})
    rng = np.random.default_rng(0)
    reqs = []
    for i in range(64):
        n = int(rng.integers(1, 6))
        x = rng.random((n, 64)).round(3).tolist()
        reqs.append(["/encode", {"inputs": x, "samples": 2, "seed": i}] if i % 4 == 0 else
                    ["/sample", {"n": n, "seed": i}] if i % 4 == 1 else
                    ["/score", {"inputs": x, "k": 3, "seed": i}] if i % 4 == 2 else
                    ["/reconstruct", {"inputs": x, "sample": True, "seed": i}])

    async def main(c):
        return await asyncio.gather(*(c.post(p, json=b) for p, b in reqs))

    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            alone = [c.post(p, json=b).json() for p, b in reqs]
            before = c.get("/metrics").text

        async def run():
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as ac:
                return await main(ac)

        together = [r.json() for r in asyncio.run(run())]
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            after = c.get("/metrics").text
    finally:
        srv.stop()
    for (path, _), a, t in zip(reqs, alone, together, strict=True):
        for key in a:
            np.testing.assert_allclose(np.array(t[key], dtype=np.float64),
                                       np.array(a[key], dtype=np.float64),
                                       atol=1e-5, rtol=1e-5, err_msg=f"{path} {key}")

    def merged(text: str) -> float:  # runs that held rows of two or more requests
        count = re.search(r'^vae_batch_requests_count\{graph="encoder",model="digits"\} (\S+)$',
                          text, re.M)
        single = re.search(r'^vae_batch_requests_bucket\{graph="encoder",le="1.0",'
                           r'model="digits"\} (\S+)$', text, re.M)
        return float(count.group(1)) - float(single.group(1))

    assert merged(after) - merged(before) >= 1
