"""Row batching: concurrent requests' rows merged into one onnxruntime run per graph.

BentoML's adaptive batching takes one argument per API and reaches other endpoints only
through a pickling HTTP proxy (docs/DESIGN.md, Batching), so each graph gets this small
in-process batcher instead: an asyncio queue in front of the session. A batch closes when it
holds `max_rows` rows or its first request has waited `max_wait_ms` (under load, then also once
the loop's next turns bring no more rows: _gather); one batch per graph runs
at a time, in a worker thread, so the event loop keeps accepting requests meanwhile (a run
expected to be shorter than `inline_max_ms` runs in the loop: the hop would cost more). A request
larger than `max_rows` runs alone (never split, so its rows see one consistent run). The queue
is bounded in rows: past `max_queue_rows` a request is refused at once (503), not queued.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import Overloaded
from service.metrics import (
    BATCH_REQUESTS,
    BATCH_ROWS,
    COMPUTE_SECONDS,
    QUEUE_SECONDS,
    LazyHistogram,
)


class QueueFull(Overloaded):
    """The graph's queue holds its maximum of rows: an overload answer (503), not bad input."""


def settle(future: asyncio.Future | Future, result: Any = None,
            exc: BaseException | None = None) -> None:
    """Answer a request unless it went away meanwhile (its client left, or a gRPC thread gave
    up at its deadline and cancelled, possibly from its own thread: hence the try)."""
    if future.done():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


@dataclass
class _Queued:
    x: np.ndarray
    future: asyncio.Future | Future
    queued_at: float = field(default_factory=time.perf_counter)


class RowBatcher:
    def __init__(self, graph: str, run: Callable[[np.ndarray], list[np.ndarray]],
                 max_rows: int, max_wait_ms: float, max_queue_rows: int,
                 inline_max_ms: float = 0.0, model: str = ""):
        self.graph, self.model = graph, model
        # A run expected to take less than this goes in the event loop itself: handing it to
        # the thread and back costs more than such a run and contends for the GIL.
        # The expectation: rows x a moving average of the measured seconds per row.
        self.inline_max_s = inline_max_ms / 1000.0
        self.row_seconds: float | None = None
        self.last_rows = 0  # rows of the last run: how many _gather expects again
        self.run = run
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue_rows = max_queue_rows
        self.queue: deque[_Queued] = deque()
        self.queued_rows = 0
        self.wakeup = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{graph}")
        self.task: asyncio.Task | None = None
        # metric children looked up once: .labels() costs as much as the observation
        self.queue_seconds = LazyHistogram(QUEUE_SECONDS.labels(model, graph))
        self.compute_seconds = LazyHistogram(COMPUTE_SECONDS.labels(model, graph))
        self.batch_rows = LazyHistogram(BATCH_ROWS.labels(model, graph))
        self.batch_requests = LazyHistogram(BATCH_REQUESTS.labels(model, graph))

    async def submit(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the graph on x [n, ...] within a merged batch; -> its outputs' rows for x."""
        future = asyncio.get_running_loop().create_future()
        self.enqueue(x, future)
        return await future

    def enqueue(self, x: np.ndarray, future: asyncio.Future | Future) -> None:
        """In the loop: queue x; `future` (asyncio's, or concurrent.futures' for a caller in
        another thread) gets its rows' outputs. QueueFull when the queue is full."""
        if self.queued_rows + len(x) > self.max_queue_rows and self.queue:
            raise QueueFull(f"{self.model or 'the'} {self.graph} queue holds "
                            f"{self.queued_rows} rows; the limit is {self.max_queue_rows} "
                            "(VAE_MAX_QUEUE_ROWS)")
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._loop())
        self.queue.append(_Queued(x, future))
        self.queued_rows += len(x)
        self.wakeup.set()

    def close(self) -> None:
        """Stop the loop and its thread once a retired version's requests are answered."""
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False)

    async def _loop(self) -> None:
        while True:
            while not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            # wait for company until the oldest request's deadline or a full batch
            deadline = self.queue[0].queued_at + self.max_wait
            while self.queued_rows < self.max_rows and (left := deadline -
                                                        time.perf_counter()) > 0:
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=left)
                except TimeoutError:
                    break
            await self._gather()
            batch = [self.queue.popleft()]
            rows = len(batch[0].x)
            while self.queue and rows + len(self.queue[0].x) <= self.max_rows:
                rows += len(self.queue[0].x)
                batch.append(self.queue.popleft())
            self.queued_rows -= rows
            await self._run_batch(batch, rows)

    async def _gather(self) -> None:
        """Under load, let the loop turn while that grows the queue. Requests whose bytes came
        during the last run reach the queue only in the loop's next turns (one reads the
        sockets, the next runs their handlers), and closing the batch at the first of them
        left the rest to a second run of 1-2 rows at twice the cost per row (docs/BENCHMARKS.md,
        P4). Started only when fewer rows wait than the last run had, so a lone request on a
        quiet server goes at once."""
        if self.queued_rows >= self.last_rows:
            return
        while self.queued_rows < self.max_rows:
            before = self.queued_rows
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if self.queued_rows == before:
                return

    async def _run_batch(self, batch: list[_Queued], rows: int) -> None:
        start = time.perf_counter()
        self.last_rows = rows
        self.queue_seconds.observe_many([start - p.queued_at for p in batch])
        x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
        inline = self.row_seconds is not None and self.row_seconds * rows < self.inline_max_s
        try:
            if inline:  # cheaper than the thread hop it would take
                outs = self.run(x)
            else:
                outs = await asyncio.get_running_loop().run_in_executor(self.executor,
                                                                        self.run, x)
        except Exception as exc:  # a failed run fails its requests, never the loop
            for p in batch:
                settle(p.future, exc=exc)
            return
        elapsed = time.perf_counter() - start
        per_row = elapsed / rows  # an over-estimate for small batches (fixed cost): the safe side
        self.row_seconds = per_row if self.row_seconds is None else \
            0.9 * self.row_seconds + 0.1 * per_row
        self.compute_seconds.observe(elapsed)
        self.batch_rows.observe(rows)
        self.batch_requests.observe(len(batch))
        offset = 0
        for p in batch:
            n = len(p.x)
            settle(p.future, [o[offset : offset + n] for o in outs])
            offset += n
