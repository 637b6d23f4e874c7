"""`make loadtest`: a bounded headless locust run, CSV and HTML reports in a results folder.

    python -m loadtests.run --users 16 --spawn-rate 8 --run-time 30s --p95-ms 1000 MixUser
    python -m loadtests.run --host http://10.0.0.5:3000 ...   # an already running server

Without --host it starts `bentoml serve` of the repository's model on free loopback ports,
waits for /readyz, runs locust, and stops the server. Exits with locust's code: non-zero when
a request failed or the p95 bound was exceeded (see locustfile.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from support.servers import Proc, start_service

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def start_server(env: dict[str, str], log_dir: Path) -> Proc:
    """The service as `make serve` runs it (env from the Makefile), ready, or SystemExit."""
    srv = start_service(env, log_dir)
    try:
        srv.wait_ready()
    except (RuntimeError, TimeoutError) as exc:
        srv.stop()
        raise SystemExit(str(exc)) from None
    return srv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="", help="a running server; empty: start one here")
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--spawn-rate", type=float, default=8)
    p.add_argument("--run-time", default="30s")
    p.add_argument("--p95-ms", type=float, default=1000.0)
    p.add_argument("--encoding", default="json", choices=["json", "npy"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--results", default="results/loadtest")
    p.add_argument("classes", nargs="*", default=["MixUser"], help="locust user classes")
    a = p.parse_args(argv)
    results = Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    srv = None if a.host else start_server({}, results)
    host = a.host or srv.url
    try:
        cmd = [str(BIN / "locust"), "-f", str(ROOT / "loadtests" / "locustfile.py"),
               "--headless", "-u", str(a.users), "-r", str(a.spawn_rate), "-t", a.run_time,
               "--host", host, "--csv", str(results / "locust"), "--html",
               str(results / "report.html"), "--only-summary", "--stop-timeout", "10",
               "--encoding", a.encoding, "--batch", str(a.batch), "--p95-ms", str(a.p95_ms),
               *a.classes]
        code = subprocess.run(cmd, cwd=ROOT).returncode
    finally:
        if srv is not None:
            srv.stop()
    print(f"loadtest: exit {code}; reports in {results}/ (locust_stats.csv, report.html)")
    return code


if __name__ == "__main__":
    sys.exit(main())
