"""`make bench-jobs`: offline jobs measured side by side in one run (docs/BENCHMARKS.md, "Offline
jobs"). For each data set, `vae-jobs encode` on the local engine against its ceiling, the same
batches through onnxruntime in a bare process (1 and 2 threads); the same items sent to the
running service as 256-item npy requests; and the Ray engine on a two-node cluster started
on this machine (one CPU per node). Items/s and peak RSS of each; the table is printed.

    python -m benchmarks.jobs --repository models --model mnist --mnist data/mnist
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from modelrepo.idx import read_idx
from modelrepo.repository import list_versions
from support.servers import descendants, free_port, start_service

CEILING = """
import resource, sys, time
import numpy as np, onnxruntime as ort
path, enc, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), 256
o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
s = ort.InferenceSession(enc, o, providers=["CPUExecutionProvider"])
x = np.load(path, mmap_mode="r")
t0 = time.perf_counter()
for i in range(0, len(x), batch):
    s.run(["mu", "logvar"], {"x": np.asarray(x[i:i + batch], np.float32) / np.float32(255)})
dt = time.perf_counter() - t0
print(len(x) / dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _peak_rss_sampler(pids: callable, stop: threading.Event, out: list[float]) -> None:
    """The largest sum of the processes' RSS seen (MB), sampled every 0.2 s."""
    while not stop.is_set():
        total = 0
        for p in pids():
            try:
                status = Path(f"/proc/{p}/status").read_text()
                total += int(next(s.split()[1] for s in status.splitlines()
                                  if s.startswith("VmRSS")))
            except (OSError, StopIteration):
                pass
        out.append(total / 1024)
        stop.wait(0.2)


def _timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of the process and its children, output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    stop, peaks = threading.Event(), []
    sampler = threading.Thread(target=_peak_rss_sampler, args=(
        lambda: [proc.pid, *descendants(proc.pid)], stop, peaks), daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    dt = time.perf_counter() - t0
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return dt, max(peaks, default=0.0), out


def job(args, data: Path, work: Path, *extra: str) -> tuple[float, float]:
    out = work / f"out-{time.monotonic_ns()}"
    dt, rss, text = _timed([sys.executable, "-m", "jobs", "encode", "--repository",
                            args.repository, "--model", args.model, "--input", str(data),
                            "--output", str(out), *extra])
    shutil.rmtree(out, ignore_errors=True)
    # the job's own rate: its items over the time after the model was opened (the ceiling
    # does not count its session's creation either)
    return float(re.search(r"\(([\d,]+) items/s\)", text)[1].replace(",", "")), rss


def through_service(args, data: Path, work: Path) -> tuple[float, float]:
    x = np.load(data, mmap_mode="r")
    env = {"VAE_MODEL_REPOSITORY": str(Path(args.repository).resolve()),
           "VAE_MODEL_NAME": args.model, "VAE_GRPC": "false", "VAE_ACCESS_LOG": "off"}
    with start_service(env, work) as srv, httpx.Client(base_url=srv.url, timeout=120) as http:
        stop, peaks = threading.Event(), []
        sampler = threading.Thread(target=_peak_rss_sampler, args=(
            lambda: [srv.proc.pid, *descendants(srv.proc.pid)], stop, peaks), daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        for i in range(0, len(x), 256):
            buf = io.BytesIO()
            np.save(buf, np.asarray(x[i:i + 256]))  # uint8: the service scales by 1/255
            r = http.post("/encode", json={"inputs": {"npy": base64.b64encode(
                buf.getvalue()).decode()}})
            r.raise_for_status()
        dt = time.perf_counter() - t0
        stop.set()
        sampler.join()
    return len(x) / dt, max(peaks, default=0.0)


def on_ray(args, data: Path, work: Path) -> tuple[float, float]:
    ray = Path(sys.executable).parent / "ray"
    port = free_port()
    common = ["--num-cpus", "1", "--object-store-memory", str(200 << 20),
              "--disable-usage-stats"]
    subprocess.run([str(ray), "start", "--head", "--node-ip-address", "127.0.0.1", "--port",
                    str(port), "--include-dashboard", "false", *common], check=True,
                   capture_output=True)
    subprocess.run([str(ray), "start", "--address", f"127.0.0.1:{port}", *common],
                   check=True, capture_output=True)
    try:
        time.sleep(3)
        stop, peaks = threading.Event(), []

        def ray_pids() -> list[int]:  # every Ray process on the machine, and the driver
            return [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_ray(int(p))]

        sampler = threading.Thread(target=_peak_rss_sampler, args=(ray_pids, stop, peaks),
                                   daemon=True)
        sampler.start()
        rate, _ = job(args, data, work, "--engine", "ray", "--ray-address",
                      f"127.0.0.1:{port}", "--workers", "2")
        stop.set()
        sampler.join()
        return rate, max(peaks, default=0.0)
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True)


def _is_ray(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"ray" in cmd or b"-m\0jobs" in cmd


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", default="models")
    p.add_argument("--model", default="mnist")
    p.add_argument("--mnist", default="data/mnist", help="folder with t10k-images-idx3-ubyte")
    p.add_argument("--synthetic", type=int, default=100_000)
    a = p.parse_args(argv)
    version = max(list_versions(a.repository, a.model))
    encoder = str(Path(a.repository) / a.model / str(version) / "encoder.onnx")
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    sets = {}
    idx = next(iter(Path(a.mnist).glob("t10k-images-idx3-ubyte*")), None)
    if idx is not None:
        np.save(work / "mnist.npy", read_idx(idx)[:, None])
        sets["MNIST test, 10,000"] = work / "mnist.npy"
    rng = np.random.default_rng(0)
    np.save(work / "synthetic.npy", rng.integers(0, 256, (a.synthetic, 1, 28, 28), np.uint8))
    sets[f"synthetic, {a.synthetic:,}"] = work / "synthetic.npy"
    rows = []
    for name, data in sets.items():
        for threads in (1, 2):
            dt, rss, out = _timed([sys.executable, "-c", CEILING, str(data), encoder,
                                   str(threads)])
            ceiling, _ = map(float, out.split()[-2:])
            rate, jrss = job(a, data, work, "--threads", str(threads))
            rows.append((name, f"local engine, {threads} thread{'s' * (threads > 1)}", rate,
                         jrss, f"{100 * rate / ceiling:.0f} % of {ceiling:,.0f}"))
            rows.append((name, f"onnxruntime alone, {threads} thread{'s' * (threads > 1)}",
                         ceiling, rss, "ceiling"))
        rate, rss = through_service(a, data, work)
        rows.append((name, "the service, 256-item npy /encode", rate, rss, ""))
        rate, rss = on_ray(a, data, work)
        rows.append((name, "Ray engine, 2 nodes x 1 CPU", rate, rss, ""))
    print(f"\n{a.model}/{version}, encode (mu, sigma), batches of 256\n")
    print("| data | how | items/s | peak RSS | vs ceiling |\n|---|---|---|---|---|")
    for name, how, rate, rss, note in rows:
        print(f"| {name} | {how} | {rate:,.0f} | {rss:,.0f} MB | {note} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
