"""Request deadlines for many in-flight requests at the cost of a dict entry each.

`asyncio.timeout` arms a timer per request, a measurable share of a one-item /encode
(docs/BENCHMARKS.md, P2). Here a request registers its task with a deadline, and one sweep every
`tick` seconds cancels the tasks past theirs, so a request times out between `timeout_s` and
`timeout_s + tick` after it started; the sweep stops while nothing is in flight.
"""

from __future__ import annotations

import asyncio


class Deadlines:
    def __init__(self, timeout_s: float, tick: float = 0.1):
        self.timeout_s = timeout_s
        self.tick = tick
        self.active: dict[asyncio.Task, float] = {}
        self.expired: set[asyncio.Task] = set()
        self.sweeping: asyncio.AbstractEventLoop | None = None  # the loop sweeping now

    def enter(self) -> asyncio.Task:
        """Start the clock for the current task (one request); pair with `leave`."""
        task = asyncio.current_task()
        assert task is not None, "Deadlines.enter runs inside a task"
        loop = task.get_loop()
        self.active[task] = loop.time() + self.timeout_s
        if self.sweeping is not loop:
            self.sweeping = loop
            loop.call_later(self.tick, self._sweep, loop)
        return task

    def leave(self, task: asyncio.Task) -> None:
        self.active.pop(task, None)
        self.expired.discard(task)

    def timed_out(self, task: asyncio.Task) -> bool:
        """After a CancelledError: was it this deadline's? If so the cancellation is consumed
        (the request goes on to answer 504), as `asyncio.timeout` does."""
        if task in self.expired:
            self.expired.discard(task)
            task.uncancel()
            return True
        return False

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self.active.items()):
            if deadline <= now and task not in self.expired:
                del self.active[task]
                self.expired.add(task)
                task.cancel()
        self.sweeping = loop if self.active else None
        if self.sweeping is not None:
            loop.call_later(self.tick, self._sweep, loop)
