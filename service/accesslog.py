"""The JSON access log: one object per request or RPC, on stderr (VAE_ACCESS_LOG=json).

Written by the HTTP middleware and the gRPC wrapper from the worker's event loop. Lines are
serialised with orjson and buffered: the buffer goes out in one write when it reaches 64 KiB or
0.2 s after its first line, so under load one syscall carries hundreds of lines (the logging
module's handler, lock, formatter and a write + flush per line cost ~20 % of a one-item
/encode, benchmark P2). Whatever is buffered is written at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import os
from typing import Any

import orjson


class AccessLog:
    def __init__(self, fd: int = 2, max_delay: float = 0.2, max_bytes: int = 65536):
        self.fd, self.max_delay, self.max_bytes = fd, max_delay, max_bytes
        self.buf = bytearray()
        self.pending: asyncio.TimerHandle | None = None

    def write(self, record: dict[str, Any]) -> None:
        self.buf += orjson.dumps(record)
        self.buf += b"\n"
        if len(self.buf) >= self.max_bytes:
            self.flush()
        elif self.pending is None:
            try:
                self.pending = asyncio.get_running_loop().call_later(self.max_delay, self.flush)
            except RuntimeError:  # no loop (a thread, shutdown): write now
                self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
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
