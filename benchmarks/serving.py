"""`make bench`: serving benchmarks P2–P5 of docs/BENCHMARKS.md, every row in one run.

Servers run pinned to CPU 0, the load generator (wrk, one thread) to CPU 1; each cell is a
warm-up then 3 runs of --seconds, and the table shows medians. The two sides of a ratio (P2,
P4) are up together and their runs interleaved (interleaved(), shared with P6). Servers run
as operators run them: metrics, request IDs and access logs on (the defaults).

    python -m benchmarks.serving --repository models --digits digits --mnist mnist
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelrepo.repository import list_versions
from support.servers import Proc, rss_mb, start_bentoml, start_documented, start_peer

LUA = """wrk.method = "POST"
{headers}
local f = io.open("{body}", "rb"); wrk.body = f:read("*a"); f:close()
"""
JSON = {"Content-Type": "application/json"}


def wrk(url: str, body: bytes, conns: int, seconds: int, work: Path,
        headers: dict[str, str] = JSON) -> dict:
    """One wrk run on CPU 1 POSTing `body` (any bytes) with `headers`."""
    (work / "body.bin").write_bytes(body)
    script = work / "post.lua"
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script.write_text(LUA.format(headers=lines, body=work / "body.bin"))
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
                          "--latency", "-s", str(script), url], capture_output=True, text=True,
                         check=True).stdout
    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\b", out, re.M)
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
        return float(m.group(1)) * scale[m.group(2)] if m else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": ms("50"), "p99": ms("99"), "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else ""}


def interleaved(measures: list[Callable[[int], dict]], seconds: int) -> list[list[dict]]:
    """Cells compared in a ratio, measured interleaved: a 3 s warm-up of each, then runs A, B,
    A, B, A, B of `seconds`. The shared machine's speed drifts over the minute a cell takes;
    interleaved, the drift falls on both sides alike instead of on whichever ran second."""
    for measure in measures:
        measure(3)
    runs: list[list[dict]] = [[] for _ in measures]
    for _ in range(3):
        for i, measure in enumerate(measures):
            runs[i].append(measure(seconds))
    return runs


def summary(runs: list[dict], failed: str) -> dict:
    """One cell: medians of the runs, their `failed` counts summed, each run's req/s."""
    return {**{k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")},
            failed: sum(r[failed] for r in runs), "runs": [round(r["rps"], 1) for r in runs]}


def cells(targets: list[tuple[str, bytes]], conns: int, seconds: int, work: Path,
          headers: dict[str, str] = JSON) -> list[dict]:
    """wrk cells (URL, body) measured interleaved."""
    runs = interleaved([functools.partial(wrk, url, body, conns, work=work, headers=headers)
                        for url, body in targets], seconds)
    return [summary(rs, "non2xx") for rs in runs]


def npy_b64(x: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, x.astype(np.float32), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode()


def images(shape: list[int], n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, *shape), dtype=np.float32)


def ort_ceiling(encoder: Path, x: np.ndarray, seconds: float = 3.0) -> float:
    """Items/s of the bare encoder session on CPU 0, 1 intra-op thread, in this process."""
    import onnxruntime as ort

    os.sched_setaffinity(0, {0})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    s = ort.InferenceSession(str(encoder), opts, providers=["CPUExecutionProvider"])
    s.run(None, {"x": x})
    rates = []
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            s.run(None, {"x": x})
            n += len(x)
        rates.append(n / (time.perf_counter() - t0))
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repository", default="models")
    p.add_argument("--digits", default="digits")
    p.add_argument("--mnist", default="mnist")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--only", default="P2,P3,P4,P5")
    p.add_argument("--out", default="results/bench.json")
    p.add_argument("--documented", action="store_true",
                   help="P2 also measures the operation behind BentoML's documented "
                        "@bentoml.api path (benchmarks/peers/documented_path.py)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="another checkout (e.g. a git worktree of the previous main): its "
                        "server runs beside this one in every cell, interleaved")
    a = p.parse_args(argv)
    only = set(a.only.split(","))
    repo = Path(a.repository)
    rows: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="vae-bench-"))

    def run(name: str, server: Proc, path: str, body: bytes, conns: int, **extra) -> dict:
        return run_pair([(name, server, body)], path, conns, **extra)[0]

    def run_pair(sides: list[tuple[str, Proc, bytes]], path: str, conns: int,
                 **extra) -> list[dict]:
        """The sides of one ratio, both servers up and measured interleaved (cells())."""
        got = cells([(srv.url + path, body) for _, srv, body in sides], conns, a.seconds, work)
        out = [{"row": name, **extra, **r} for (name, _, _), r in zip(sides, got, strict=True)]
        for r in out:
            rows.append(r)
            print(json.dumps(r), flush=True)
        return out

    digits_dir = repo / a.digits / str(max(list_versions(repo, a.digits)))
    shape_d = json.loads((digits_dir / "manifest.json").read_text())["input"]["shape"]
    one_json = json.dumps({"inputs": images(shape_d, 1).tolist()}).encode()
    def both(model: str, env: dict[str, str], stack: contextlib.ExitStack
             ) -> list[tuple[str, Proc]]:
        """This service, and the baseline's beside it when one is given."""
        out = [("", stack.enter_context(start_bentoml(repo, model, env, work)))]
        if a.baseline is not None:
            out.append((" (baseline)", stack.enter_context(
                start_bentoml(repo, model, env, work, cwd=a.baseline))))
        return out

    if "P2" in only:
        with contextlib.ExitStack() as stack:
            peer = stack.enter_context(start_peer(digits_dir / "encoder.onnx", work))
            extra = [("P2 BentoML @bentoml.api path", stack.enter_context(
                start_documented(repo, a.digits, work)), one_json)] if a.documented else []
            run_pair([("P2 naive peer", peer, one_json)] +
                     [(f"P2 this service{tag}", srv, one_json)
                      for tag, srv in both(a.digits, {}, stack)] + extra, "/encode", 64)
    mnist = repo / a.mnist
    if mnist.is_dir() and ("P3" in only or "P4" in only):
        mdir = mnist / str(max(list_versions(repo, a.mnist)))
        shape_m = json.loads((mdir / "manifest.json").read_text())["input"]["shape"]
        x256 = images(shape_m, 256)
        if "P3" in only:
            ceiling = ort_ceiling(mdir / "encoder.onnx", x256)
            body = json.dumps({"inputs": {"npy": npy_b64(x256)}}).encode()
            with contextlib.ExitStack() as stack:
                got = run_pair([(f"P3 /encode 256 npy{tag}", srv, body)
                                for tag, srv in both(a.mnist, {}, stack)], "/encode", 4)
            for r in got:
                r["items_per_s"] = r["rps"] * 256
                r["ceiling_items_per_s"] = ceiling
                print(json.dumps(r), flush=True)
        if "P4" in only:
            for model, shape in ((a.mnist, shape_m), (a.digits, shape_d)):
                body = json.dumps({"inputs": {"npy": npy_b64(images(shape, 1))}}).encode()
                with contextlib.ExitStack() as stack:
                    off = both(model, {"VAE_BATCHING": "false"}, stack)
                    on = both(model, {"VAE_BATCHING": "true"}, stack)
                    run_pair([(f"P4 {model} batching={flag}{tag}", srv, body)
                              for flag, side in (("false", off), ("true", on))
                              for tag, srv in side], "/encode", 64)
    elif "P3" in only or "P4" in only:
        print(f"P3/P4 skipped: no {mnist} (make model-mnist)", file=sys.stderr)
    if "P5" in only:
        for model in (a.digits, a.mnist):
            if not (repo / model).is_dir():
                continue
            starts = []
            for _ in range(3):
                with start_bentoml(repo, model, {}, work) as ours:
                    starts.append(ours.ready_s)
                    rss = rss_mb(ours.proc.pid)
            r = {"row": f"P5 {model}", "cold_start_s": statistics.median(starts),
                 "starts": [round(s, 2) for s in starts], "rss_mb": rss}
            rows.append(r)
            print(json.dumps(r), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print("\n| row | req/s (median of 3) | p50 ms | p99 ms | non-2xx | runs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "rps" in r:
            print(f"| {r['row']} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                  f"{r['non2xx']} | {r['runs']} |")
    for r in rows:
        if "items_per_s" in r:
            share = r["items_per_s"] / r["ceiling_items_per_s"]
            print(f"\nP3: {r['items_per_s']:,.0f} items/s vs in-process onnxruntime "
                  f"{r['ceiling_items_per_s']:,.0f} = {share:.0%}")
        if "cold_start_s" in r:
            print(f"{r['row']}: cold start {r['cold_start_s']:.2f} s {r['starts']}, "
                  f"RSS MB {r['rss_mb']}")


if __name__ == "__main__":
    main()
