"""The JSON access log: one object per request or RPC, on stderr (VAE_ACCESS_LOG=json).

Written by the request lifecycle (service/lifecycle/calls.py) from the worker's event loop
(HTTP) and from grpc's threads. Lines are serialised with orjson and buffered: the buffer goes
out in one write when it reaches 64 KiB or 0.2 s after its first line, so under load one syscall
carries hundreds of lines (the logging module's handler, lock, formatter and a write + flush per
line were a large share of a small request: docs/BENCHMARKS.md, P2). Whatever is buffered is
written at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from typing import Any

import orjson


class AccessLog:
    def __init__(self, fd: int = 2, max_delay: float = 0.2, max_bytes: int = 65536):
        self.fd, self.max_delay, self.max_bytes = fd, max_delay, max_bytes
        self.buf = bytearray()
        self.armed = False  # a flush is scheduled
        self.lock = threading.Lock()  # the event loop and gRPC's threads both write

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        with self.lock:
            self.buf += line
            if len(self.buf) < self.max_bytes:
                if not self.armed:
                    self.armed = True
                    self._arm()
                return
        self.flush()

    def _arm(self) -> None:
        try:
            asyncio.get_running_loop().call_later(self.max_delay, self.flush)
        except RuntimeError:  # a gRPC thread: a timer thread, at most one per max_delay
            timer = threading.Timer(self.max_delay, self.flush)
            timer.daemon = True
            timer.start()

    def flush(self) -> None:
        with self.lock:
            self.armed = False  # a timer armed earlier may still fire: it flushes early, no harm
            data = memoryview(bytes(self.buf))
            self.buf.clear()
        while data:
            try:
                data = data[os.write(self.fd, data):]
            except BlockingIOError:
                continue
            except OSError:  # stderr closed: nothing left to tell
                return


ACCESS_LOG = AccessLog()
atexit.register(ACCESS_LOG.flush)
