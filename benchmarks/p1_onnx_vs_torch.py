"""P1: onnxruntime vs PyTorch eager on the same weights, encoder + decoder items/s.

    python -m benchmarks.p1_onnx_vs_torch --checkpoint runs/digits/checkpoint.pt \
        --checkpoint runs/mnist/checkpoint.pt

Each cell (model, batch, threads) times both engines in alternating rounds, so machine noise
hits both sides alike; the table reports the median of the rounds. Each engine runs in a
process of its own with one thread pool for both networks. One call = encode a batch
of held-out-shaped inputs, then decode their mu.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.onnx_export import export_checkpoint
from training.model import load_checkpoint


def _time(fn, min_seconds: float) -> float:
    """Seconds per call: repeat fn until min_seconds have passed (after one warm-up call)."""
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        fn()
        calls += 1
    return elapsed / calls


def _engine(kind: str, checkpoint: str, version_dir: str, threads: int,
            conn: Connection) -> None:
    """One engine with `threads` threads in a process of its own: asked for (batch, seconds),
    it answers seconds per call. Each engine has one pool of threads for both networks, as a
    process would: PyTorch's OpenMP pool, and for onnxruntime its global intra-op pool shared by
    the encoder and decoder sessions (`set_global_thread_pool_sizes`). Measured: with a pool
    per session, one session's idle workers spin while the other runs and take its core
    (digits MLP, batch 256, 2 threads: 303k items/s against 702k with one shared pool); and two
    engines in one process fight the same way (docs/BENCHMARKS.md, P1)."""
    vae, _ = load_checkpoint(checkpoint)
    torch.set_num_threads(threads)
    if kind == "ort":
        ort.set_global_thread_pool_sizes(threads, 1)
        opts = ort.SessionOptions()
        opts.use_per_session_threads = False
        enc, dec = (ort.InferenceSession(str(Path(version_dir) / f), opts,
                                         providers=["CPUExecutionProvider"])
                    for f in ("encoder.onnx", "decoder.onnx"))
    while (ask := conn.recv()) is not None:
        b, seconds = ask
        x = np.random.default_rng(0).random((b, *vae.cfg.input_shape), dtype=np.float32)
        if kind == "torch":
            xt = torch.from_numpy(x)

            def run(xt=xt) -> None:
                with torch.inference_mode():
                    mu, _ = vae.encode(xt)
                    vae.decode(mu)
        else:

            def run(x=x) -> None:
                mu, _ = enc.run(["mu", "logvar"], {"x": x})
                dec.run(["x"], {"z": mu})
        conn.send(_time(run, seconds))


def bench_model(checkpoint: str, batches: list[int], threads: list[int], rounds: int,
                seconds: float) -> list[dict]:
    vae, payload = load_checkpoint(checkpoint)
    rows = []
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        vdir = export_checkpoint(checkpoint, tmp, "bench", variants=(), reload_data=True)
        for t in threads:
            engines = {}
            for kind in ("torch", "ort"):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=_engine, args=(kind, checkpoint, str(vdir), t, theirs))
                proc.start()
                engines[kind] = (proc, mine)
            try:
                for b in batches:
                    times: dict[str, list[float]] = {"torch": [], "ort": []}
                    for _ in range(rounds):  # alternating: the machine's drift hits both
                        for kind, (_, conn) in engines.items():
                            conn.send((b, seconds))
                            times[kind].append(conn.recv())
                    torch_ips = b / statistics.median(times["torch"])
                    ort_ips = b / statistics.median(times["ort"])
                    rows.append({"model": f"{payload['train_config']['data']} "
                                          f"{vae.cfg.arch}", "batch": b, "threads": t,
                                 "torch": torch_ips, "ort": ort_ips,
                                 "ratio": ort_ips / torch_ips})
            finally:
                for proc, conn in engines.values():
                    conn.send(None)
                    proc.join(timeout=30)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.p1_onnx_vs_torch")
    p.add_argument("--checkpoint", action="append", required=True)
    p.add_argument("--batches", default="1,32,256")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0, help="per round and engine")
    p.add_argument("--out", help="also write the rows here as JSON (make bench's table)")
    args = p.parse_args(argv)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    print("| model | batch | threads | PyTorch eager items/s | onnxruntime items/s | ratio |")
    print("|---|---|---|---|---|---|")
    rows: list[dict] = []
    for ck in args.checkpoint:
        if not Path(ck).exists():
            print(f"| {ck} absent: skipped | | | | | |")
            continue
        for r in bench_model(ck, ints(args.batches), ints(args.threads), args.rounds,
                             args.seconds):
            rows.append(r)
            print(f"| {r['model']} | {r['batch']} | {r['threads']} | {r['torch']:,.0f} | "
                  f"{r['ort']:,.0f} | {r['ratio']:.2f}× |", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
