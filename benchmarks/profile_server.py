"""Where a served request's time goes: py-spy samples the worker while wrk loads one endpoint
(the P2 request by default; --grpc: V2 ModelInfer over gRPC from benchmarks/grpc_load.py, the
P6 request). Writes a flame graph SVG and prints the functions holding the largest share of
samples (inclusive), for docs/BENCHMARKS.md.

    python -m benchmarks.profile_server --repository models --model digits \
        --svg docs/images/profiles/p2.svg
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.serving import images, npy_b64, wrk
from support.servers import BIN, descendants, start_bentoml

# process scaffolding that every sample passes through: not informative
SCAFFOLD = ("runpy", "click/", "worker/service.py", "uvicorn/server.py", "uvicorn/_compat.py",
            "asyncio/", "threading.py")


def top(raw: Path, n: int = 25) -> list[tuple[float, str]]:
    incl: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            key = f"{where.split(':')[0].split('site-packages/')[-1]}:{name}"
            if key not in seen:
                incl[key] += int(count)
                seen.add(key)
    ranked = [(100 * c / total, k) for k, c in incl.most_common()
              if not any(part in k for part in SCAFFOLD)]
    return ranked[:n]


def leaves(raw: Path, n: int = 25) -> list[tuple[float, str]]:
    """Self time: the share of samples whose innermost Python frame is each function (native
    work, such as a syscall, counts to the Python frame that made it)."""
    self_: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        name, _, where = stack.split(";")[-1].partition(" (")
        self_[f"{where.split(':')[0].split('site-packages/')[-1]}:{name}"] += int(count)
    return [(100 * c / total, k) for k, c in self_.most_common(n)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repository", default="models")
    p.add_argument("--model", default="digits")
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--svg", default="results/profile.svg")
    p.add_argument("--grpc", action="store_true", help="profile gRPC ModelInfer instead")
    p.add_argument("--npy", action="store_true", help="the /encode item as npy (P4's request)")
    p.add_argument("--env", action="append", default=[], help="VAE_X=value for the server")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="vae-prof-"))
    manifest = json.loads(next((Path(a.repository) / a.model).glob("*/manifest.json"))
                          .read_text())
    x = images(manifest["input"]["shape"], 1)
    body = json.dumps({"inputs": {"npy": npy_b64(x)} if a.npy else x.tolist()}).encode()
    shape = ",".join(str(v) for v in [1, *manifest["input"]["shape"]])

    def load(seconds: int) -> dict:
        if not a.grpc:
            return wrk(srv.url + "/encode", body, 64, seconds, work)
        out = subprocess.run(["taskset", "-c", "1", sys.executable, "-m",
                              "benchmarks.grpc_load", srv.grpc_url, "--shape",
                              shape, "--seconds", str(seconds)], capture_output=True,
                             text=True, check=True).stdout
        return json.loads(out)

    env = dict(kv.split("=", 1) for kv in a.env)
    with start_bentoml(Path(a.repository), a.model, env, work) as srv:
        worker = descendants(srv.proc.pid)[-1]
        load(2)
        outputs = {"raw": work / "profile.txt", "flamegraph": Path(a.svg)}
        Path(a.svg).parent.mkdir(parents=True, exist_ok=True)
        for fmt, out in outputs.items():
            spy = subprocess.Popen([str(BIN / "py-spy"), "record", "-p", str(worker), "-d",
                                    str(a.seconds), "-r", "200", "-f", fmt, "-o", str(out),
                                    "--nonblocking"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            result = load(a.seconds)
            spy.wait()
    print(f"under load: {result['rps']:,.0f} req/s; flame graph: {a.svg}")
    print("| share of samples | function |\n|---|---|")
    for share, key in top(outputs["raw"]):
        print(f"| {share:.1f} % | `{key}` |")
    print("\nself time (innermost frame)\n| share of samples | function |\n|---|---|")
    for share, key in leaves(outputs["raw"]):
        print(f"| {share:.1f} % | `{key}` |")


if __name__ == "__main__":
    main()
