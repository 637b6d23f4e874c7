"""`make soak`: a long run at a steady share of the measured peak, recording failures, p99 over
time and the RSS of every server process.

    python -m loadtests.soak --minutes 10 --fraction 0.8 --results results/soak

1. starts the service (as `make loadtest` does), 2. measures the peak: 20 s of MixUser with
no pacing, 3. runs MixUser paced at `fraction` × peak for `minutes`, sampling every server
process's RSS every 5 s, 4. writes soak.json (failures, p99 per minute from locust's history,
RSS after warm-up and at the end per process) and exits non-zero on any failure, or on RSS
growth above --max-rss-growth after the first fifth of the run.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from loadtests.chaos_load import MachineTooBusy
from loadtests.run import BIN, ROOT, start_server
from support.servers import rss_mb


def locust(host: str, results: Path, name: str, users: int, seconds: int,
           target_rps: float) -> dict:
    cmd = [str(BIN / "locust"), "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
           "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", host,
           "--csv", str(results / name), "--csv-full-history", "--only-summary",
           "--stop-timeout", "10", "--target-rps", str(target_rps), "MixUser"]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    rows = {r["Name"]: r for r in csv.DictReader(open(results / f"{name}_stats.csv"))}
    total = rows["Aggregated"]
    if int(total["Request Count"]) == 0:  # locust never got going: nothing was measured
        raise MachineTooBusy(f"{name}: locust sent no request in {seconds} s")
    return {"requests": int(total["Request Count"]), "failures": int(total["Failure Count"]),
            "rps": float(total["Requests/s"]), "p99_ms": _ms(total["99%"])}


def _ms(value: str) -> float:
    return float("nan") if value in ("N/A", "") else float(value)


def p99_per_minute(history: Path) -> list[float]:
    by_minute: dict[int, float] = {}
    t0 = None
    for row in csv.DictReader(open(history)):
        if row["Name"] != "Aggregated" or row["99%"] in ("N/A", ""):
            continue
        t = int(row["Timestamp"])
        t0 = t if t0 is None else t0
        by_minute[(t - t0) // 60] = float(row["99%"])  # locust's rolling p99, last of the minute
    return [by_minute[m] for m in sorted(by_minute)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fraction", type=float, default=0.8)
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--peak-seconds", type=int, default=20)
    p.add_argument("--max-rss-growth", type=float, default=0.05)
    p.add_argument("--results", default="results/soak")
    p.add_argument("--repository", default="", help="default: $VAE_MODEL_REPOSITORY or models")
    p.add_argument("--model", default="", help="default: $VAE_MODEL_NAME or digits")
    a = p.parse_args(argv)
    results = Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    env = {**({"VAE_MODEL_REPOSITORY": a.repository} if a.repository else {}),
           **({"VAE_MODEL_NAME": a.model} if a.model else {})}
    srv = start_server(env, results)
    host = srv.url
    samples: list[tuple[float, dict[str, float]]] = []
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), rss_mb(srv.proc.pid)))
            stop.wait(5)

    try:
        try:
            peak = locust(host, results, "peak", a.users, a.peak_seconds, 0.0)
        except MachineTooBusy as exc:  # said in the report, never a crash
            (results / "soak.json").write_text(json.dumps({"too_busy": str(exc)}) + "\n")
            print(f"soak: the machine was too busy to measure: {exc}", file=sys.stderr)
            return 3
        target = a.fraction * peak["rps"]
        sampler = threading.Thread(target=sample_rss)
        t0 = time.monotonic()
        sampler.start()
        soak = locust(host, results, "soak", a.users, int(a.minutes * 60), target)
        stop.set()
        sampler.join()
    finally:
        stop.set()
        srv.stop()
    warm = [s for t, s in samples if t - t0 >= a.minutes * 60 / 5]
    first, last = (warm[0], warm[-1]) if warm else ({}, {})
    growth = {k: (last[k] - first[k]) / first[k] for k in first if k in last}
    report = {"minutes": a.minutes, "peak": peak, "target_rps": target, "soak": soak,
              "p99_ms_per_minute": p99_per_minute(results / "soak_stats_history.csv"),
              "rss_mb_after_warmup": first, "rss_mb_at_end": last, "rss_growth": growth}
    (results / "soak.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    bad = soak["failures"] > 0 or any(g > a.max_rss_growth for g in growth.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
