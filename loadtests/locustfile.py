"""Load test of the HTTP API with real digits as payloads.

    locust -f loadtests/locustfile.py --headless -u 16 -r 8 -t 30s --host http://127.0.0.1:3000

VAE_LOAD_BATCH sets the items per /encode request (default 1).
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, between, task

from training.data import load_digits_data

_DIGITS = load_digits_data().x  # [N, 1, 8, 8] in [0, 1]; numpy + scikit-learn, no torch
BATCH = int(os.environ.get("VAE_LOAD_BATCH", "1"))


def _items(n: int) -> list:
    idx = random.sample(range(len(_DIGITS)), n)
    return _DIGITS[idx].tolist()


class VAEUser(FastHttpUser):
    wait_time = between(0, 0.01)

    @task(6)
    def encode(self) -> None:
        self.client.post("/encode", json={"inputs": _items(BATCH)})

    @task(2)
    def sample(self) -> None:
        self.client.post("/sample", json={"n": 4, "seed": random.randrange(1 << 30)})

    @task(1)
    def interpolate(self) -> None:
        self.client.post("/interpolate", json={"start": _items(1), "end": _items(1), "steps": 8,
                                               "method": "slerp"})

    @task(1)
    def reconstruct(self) -> None:
        self.client.post("/reconstruct", json={"inputs": _items(BATCH)})
