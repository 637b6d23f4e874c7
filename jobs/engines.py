"""The engines that run a job's shards: `local` (this process, one onnxruntime session pair
sized to every core) and `ray` (Ray Data over a cluster: an actor pool, each actor holding the
model's sessions, one shard per call). Both call jobs/work.py's process_shard; the shards still
to do are those without a part file, so an interrupted job resumes and a retried shard is
written once."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from jobs.inputs import Source
from jobs.work import JobSpec, open_model, part_path, process_shard, warm_writer


def pending_shards(spec: JobSpec, total: int) -> list[int]:
    shards = -(-total // spec.shard_size)
    return [s for s in range(shards) if not part_path(spec.output, s).exists()]


class Progress:
    """Items done, items/s and time left: a tqdm bar on a terminal, a plain line at most every
    10 s (and at the end) in a log."""

    def __init__(self, total: int, done: int, label: str):
        self.total, self.done, self.label = total, done, label
        self.t0 = self.last = time.monotonic()
        self.start_done = done
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="item", desc=label)

    def add(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= 10 or self.done >= self.total:
            self.last = now
            rate = (self.done - self.start_done) / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"{self.label}: {self.done:,}/{self.total:,} items "
                  f"({100 * self.done / max(self.total, 1):.0f} %), {rate:,.0f} items/s, "
                  f"about {left:.0f} s left", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_local(spec: JobSpec, on_shard: Callable[[int, int], None],
              on_ready: Callable[[], None] = lambda: None) -> None:
    rt = open_model(spec)
    warm_writer()
    source = Source(spec.input, rt.shape, rt.manifest.input.range)
    on_ready()  # the model is verified and warm: the items start here
    # one writer thread: a shard's part is written while the next shard runs the model
    with ThreadPoolExecutor(1, thread_name_prefix="parquet") as writer:
        last: Future | None = None

        def write(fn: Callable, *args: object) -> None:
            nonlocal last
            if last is not None:
                last.result()  # at most one part in flight (memory), errors surface here
            last = writer.submit(fn, *args)

        for shard in pending_shards(spec, len(source)):
            on_shard(*process_shard(rt, source, spec, shard, write))
        if last is not None:
            last.result()


class ShardWorker:
    """A Ray Data actor: the model's sessions opened once, then one shard per row it is given."""

    def __init__(self, spec_json: str):
        from jobs.cli import spec_from_json

        self.spec = spec_from_json(spec_json)
        self.rt = open_model(self.spec)
        warm_writer()
        self.source = Source(self.spec.input, self.rt.shape, self.rt.manifest.input.range)

    def __call__(self, batch: dict) -> dict:
        done, refused = [], []
        for shard in batch["shard"]:
            n, bad = process_shard(self.rt, self.source, self.spec, int(shard))
            done.append(n)
            refused.append(bad)
        return {"shard": batch["shard"], "rows": done, "errors": refused}


def run_ray(spec: JobSpec, spec_json: str, total: int, address: str | None, workers: int,
            on_shard: Callable[[int, int], None]) -> None:
    """Ray Data: the pending shards as a data set, mapped by a pool of `workers` actors (one
    CPU each). A task lost with its node is retried on another actor; its shard's file is
    written whole or not at all, so the retry writes it once."""
    import ray

    ray.init(address=address, log_to_driver=False, include_dashboard=False,
             runtime_env={"env_vars": {"BENTOML_DO_NOT_TRACK": "true",
                                       "ORT_DISABLE_TELEMETRY": "1"}})
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        shards = pending_shards(spec, total)
        if not shards:
            return
        ds = ray.data.from_items([{"shard": s} for s in shards],
                                 override_num_blocks=min(len(shards), 8 * workers))
        ds = ds.map_batches(ShardWorker, fn_constructor_args=(spec_json,), batch_size=1,
                            concurrency=(1, workers), num_cpus=1,
                            max_restarts=-1, max_task_retries=-1)
        for row in ds.iter_rows():
            on_shard(int(row["rows"]), int(row["errors"]))
    finally:
        ray.shutdown()


def write_job_file(spec: JobSpec, resume: bool) -> None:
    """The job's identity beside its parts: --resume continues only the same job."""
    out = Path(spec.output)
    job = out / "_job.json"
    ident = spec.identity()
    ident["input"] = dict(ident["input"])
    if resume and job.exists():
        before = json.loads(job.read_text())
        if before != json.loads(json.dumps(ident)):
            diff = sorted(k for k in ident if before.get(k) != json.loads(json.dumps(ident[k])))
            raise ValueError(f"--resume: {out} holds another job (differs in {', '.join(diff)})")
        return
    out.mkdir(parents=True, exist_ok=True)
    job.write_text(json.dumps(ident, indent=2) + "\n")
