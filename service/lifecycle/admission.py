"""The per-worker limit on API requests in flight (VAE_MAX_CONCURRENCY), shared by the HTTP
middleware (in the event loop) and the gRPC handlers (in grpc's threads): hence the lock."""

from __future__ import annotations

import threading


class Admission:
    """In-flight API requests of this worker, HTTP and gRPC together."""

    def __init__(self) -> None:
        self.limit = 0
        self.active = 0
        self.lock = threading.Lock()

    def try_enter(self) -> bool:
        with self.lock:
            if self.limit and self.active >= self.limit:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.active -= 1

    def refusal(self) -> str:
        return (f"concurrency: {self.active} requests in flight, the limit is {self.limit} "
                "(VAE_MAX_CONCURRENCY)")


ADMISSION = Admission()
