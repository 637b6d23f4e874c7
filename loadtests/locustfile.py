"""Load tests of the HTTP API with real digits as payloads (bounded, headless in `make loadtest`).

    locust -f loadtests/locustfile.py --headless -u 16 -r 8 -t 30s --host http://127.0.0.1:3000 \
        MixUser --encoding npy --batch 64 --p95-ms 500

User classes (name one or more; none = all, by their `weight`): EncodeOneUser, EncodeBatchUser,
SampleUser, InterpolateUser, ReconstructUser, ScoreUser, MixUser (weights from --mix).
Payloads: the served model's input shape is read from POST /model; 8x8 models get
scikit-learn's digits, 28x28 models the MNIST digits in data/mnist (VAE_DATA_DIR) (random images in
range when that folder is absent, said on stderr). The run exits non-zero when any request
failed or the aggregated p95 exceeds --p95-ms.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
from locust import FastHttpUser, between, constant_throughput, events, task

MNIST = Path(os.environ.get("VAE_DATA_DIR")
             or Path(__file__).resolve().parents[1] / "data") / "mnist"
POOL: dict[str, np.ndarray] = {}


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--encoding", choices=["json", "npy"], default="json",
                        help="image tensors in requests: JSON arrays or base64 .npy")
    parser.add_argument("--batch", type=int, default=64, help="items per EncodeBatchUser call")
    parser.add_argument("--mix", default="encode=6,sample=2,interpolate=1,reconstruct=1,score=1",
                        help="MixUser task weights")
    parser.add_argument("--p95-ms", type=float, default=0.0,
                        help="fail the run when the aggregated p95 exceeds this (0: no bound)")
    parser.add_argument("--record", default="",
                        help="write every request to this JSON-lines file: start, ms, ok, "
                             "name, the X-Model-Version and X-Served-By answered, error")
    parser.add_argument("--target-rps", type=float, default=0.0,
                        help="pace all users together at this many requests/s (0: as fast "
                             "as they can)")


def _images_for(shape: list[int]) -> np.ndarray:
    if shape == [1, 8, 8]:
        from training.data import load_digits_data
        return load_digits_data().x
    if shape == [1, 28, 28] and MNIST.is_dir():
        from training.data import load_mnist_data
        return load_mnist_data(MNIST).x[:2000]
    print(f"locustfile: no real images of shape {shape} here; sending uniform noise",
          file=sys.stderr)
    return np.random.default_rng(0).random((512, *shape), dtype=np.float32)


@events.test_start.add_listener
def _load_pool(environment, **_: object) -> None:
    import httpx

    model = httpx.post(environment.host + "/model", json={}, timeout=30).json()
    POOL["x"] = _images_for(model["input"]["shape"]).astype(np.float32)


RECORD: list[dict] = []
FIRST = {"marker": ""}  # --record's "<record>.started", touched at the first answer


@events.test_start.add_listener
def _mark_first(environment, **_: object) -> None:
    opts = environment.parsed_options
    FIRST["marker"] = f"{opts.record}.started" if opts and opts.record else ""


@events.request.add_listener
def _record(request_type, name, response_time, response_length, response=None, exception=None,
            start_time=None, **_: object) -> None:
    if FIRST["marker"]:  # a measurement waits for this: the load has really begun
        open(FIRST["marker"], "w").close()
        FIRST["marker"] = ""
    headers = getattr(response, "headers", None) or {}
    RECORD.append({"t": start_time, "ms": response_time, "name": name, "ok": exception is None,
                   "version": headers.get("x-model-version"),
                   "replica": headers.get("x-served-by"),
                   "error": None if exception is None else str(exception)[:200]})


@events.quitting.add_listener
def _write_record(environment, **_: object) -> None:
    opts = environment.parsed_options
    if opts and opts.record:
        with open(opts.record, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in RECORD)


@events.quitting.add_listener
def _verdict(environment, **_: object) -> None:
    total = environment.stats.total
    bound = environment.parsed_options.p95_ms if environment.parsed_options else 0.0
    p95 = total.get_response_time_percentile(0.95) or 0.0
    if total.num_failures:
        print(f"locustfile: {total.num_failures} failed requests", file=sys.stderr)
        environment.process_exit_code = 1
    elif bound and p95 > bound:
        print(f"locustfile: p95 {p95:.0f} ms exceeds --p95-ms {bound:.0f}", file=sys.stderr)
        environment.process_exit_code = 1


def images(n: int, encoding: str) -> object:
    x = POOL["x"][random.sample(range(len(POOL["x"])), n)]
    if encoding == "json":
        return x.tolist()
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return {"npy": base64.b64encode(buf.getvalue()).decode("ascii")}


class _VAEUser(FastHttpUser):
    abstract = True
    _free = between(0, 0.005)

    def wait_time(self) -> float:
        opts = self.environment.parsed_options
        if opts and opts.target_rps > 0:  # soak: a fixed total rate shared by the users
            return constant_throughput(opts.target_rps / max(self.environment.runner.user_count,
                                                             1))(self)
        return self._free()

    @property
    def encoding(self) -> str:
        return self.environment.parsed_options.encoding if self.environment.parsed_options \
            else "json"

    def post(self, path: str, body: dict, name: str | None = None) -> None:
        self.client.post(path, json=body, name=name or path)

    def do_encode(self, n: int) -> None:
        self.post("/encode", {"inputs": images(n, self.encoding)}, f"/encode [{n}]")

    def do_sample(self) -> None:
        self.post("/sample", {"n": 4, "seed": random.randrange(1 << 30),
                              "output_format": self.encoding})

    def do_interpolate(self) -> None:
        self.post("/interpolate", {"start": images(1, self.encoding),
                                   "end": images(1, self.encoding), "steps": 8,
                                   "method": "slerp", "output_format": self.encoding})

    def do_reconstruct(self) -> None:
        self.post("/reconstruct", {"inputs": images(4, self.encoding),
                                   "output_format": self.encoding})

    def do_score(self) -> None:
        self.post("/score", {"inputs": images(4, self.encoding), "k": 16, "seed": 0})


class EncodeOneUser(_VAEUser):
    weight = 3

    @task
    def encode(self) -> None:
        self.do_encode(1)


class EncodeBatchUser(_VAEUser):
    @task
    def encode(self) -> None:
        self.do_encode(self.environment.parsed_options.batch
                       if self.environment.parsed_options else 64)


class SampleUser(_VAEUser):
    @task
    def sample(self) -> None:
        self.do_sample()


class InterpolateUser(_VAEUser):
    @task
    def interpolate(self) -> None:
        self.do_interpolate()


class ReconstructUser(_VAEUser):
    @task
    def reconstruct(self) -> None:
        self.do_reconstruct()


class ScoreUser(_VAEUser):
    @task
    def score(self) -> None:
        self.do_score()


class MixUser(_VAEUser):
    """One user doing every operation, in the proportions of --mix."""

    weight = 3

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        spec = opts.mix if opts else "encode=6,sample=2,interpolate=1,reconstruct=1,score=1"
        ops = {"encode": lambda: self.do_encode(1), "sample": self.do_sample,
               "interpolate": self.do_interpolate, "reconstruct": self.do_reconstruct,
               "score": self.do_score}
        self.plan = []
        for part in spec.split(","):
            name, _, w = part.partition("=")
            if name.strip() not in ops:
                raise ValueError(f"--mix: unknown operation {name!r} ({', '.join(ops)})")
            self.plan += [ops[name.strip()]] * int(w or 1)

    @task
    def mixed(self) -> None:
        random.choice(self.plan)()
