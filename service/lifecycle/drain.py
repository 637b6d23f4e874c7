"""Draining a worker: from SIGTERM on, it answers "not ready" (`/readyz` 503, V2 ServerReady
false, gRPC health NOT_SERVING) while it keeps serving every request for VAE_DRAIN_S seconds,
so that a load balancer or Kubernetes stops sending to it before it stops; then uvicorn's own
graceful shutdown finishes the requests in flight and the worker exits.

BentoML runs each worker's app in uvicorn, which installs its exit handler with
`signal.signal` before the app starts (`uvicorn.Server.capture_signals`). `Drain.install`,
called from the app's startup, wraps that handler: the exit is the same, only later. This is
the one place the project reaches around the framework; `tests/test_drain.py` checks that the
handler found is uvicorn's (and fails if uvicorn changes how it installs it) and drains a real
server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable

log = logging.getLogger("vae.drain")


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self._listeners: list[Callable[[], None]] = []

    def on_drain(self, fn: Callable[[], None]) -> None:
        """Call fn (in the signal handler, so: quick) when draining starts."""
        self._listeners.append(fn)

    def start(self) -> None:
        if self.draining:
            return
        self.draining = True
        for fn in self._listeners:
            try:
                fn()
            except Exception:  # noqa: BLE001 - one listener's failure must not stop the drain
                log.exception("drain listener failed")

    def install(self, drain_s: float) -> Callable | None:
        """Wrap the SIGTERM handler in place (uvicorn's exit): mark draining at once, call the
        handler drain_s seconds later. Returns the wrapped handler (None if there was none to
        wrap, e.g. off the main thread: then SIGTERM stops the worker as before)."""
        exit_handler = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is not threading.main_thread() or \
                not callable(exit_handler):
            log.warning("no SIGTERM handler to wrap: this worker stops without draining")
            return None
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: object) -> None:
            if self.draining:  # a second SIGTERM: no more waiting
                exit_handler(signum, frame)
                return
            self.start()
            log.info("SIGTERM: not ready from now, serving for %.1f s more, then stopping",
                     drain_s)
            loop.call_soon_threadsafe(loop.call_later, drain_s, exit_handler, signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)
        return exit_handler

    def watch_parent(self, interval_s: float = 1.0) -> asyncio.Task:
        """Drain and exit when this worker's parent (BentoML's arbiter) is gone. BentoML starts
        each worker in a session of its own, so when the arbiter is SIGKILLed (or OOM-killed)
        its workers are not: they would go on serving their port unsupervised, and a new
        replica could not bind it. Orphaned, a worker signals itself as a stop would."""
        parent = os.getppid()

        async def watch() -> None:
            while os.getppid() == parent:
                await asyncio.sleep(interval_s)
            log.error("the arbiter (pid %d) is gone: this worker drains and exits", parent)
            os.kill(os.getpid(), signal.SIGTERM)

        return asyncio.get_running_loop().create_task(watch(), name="watch-parent")
