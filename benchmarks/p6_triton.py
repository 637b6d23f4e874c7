"""`make bench-p6`: this service vs a real Triton Inference Server (nvidia-pytriton, CPU only,
dynamic batcher on, its Python backend running the same encoder graph with onnxruntime).
Both pinned to CPU 0 and up together; the generators on CPU 1: wrk for V2 HTTP with binary
tensors, the asyncio client of benchmarks/grpc_load.py for gRPC; single-item encode requests,
64 in flight; a warm-up of each, then 3 runs per cell interleaved with the other side's,
medians.

    python -m benchmarks.p6_triton --triton-python .venv-triton/bin/python --repository models
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.serving import cells, interleaved, summary
from modelrepo.repository import list_versions
from support.servers import ROOT, Proc, _spawn, free_port, start_bentoml


def binary_infer(shape: list[int]) -> tuple[bytes, dict[str, str]]:
    """A V2 infer body with Triton's binary tensor extension, outputs asked for in binary."""
    x = np.random.default_rng(0).random(shape, dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape,
                                   "parameters": {"binary_data_size": len(x)}}],
                       "outputs": [{"name": n, "parameters": {"binary_data": True}}
                                   for n in ("mu", "logvar")]}).encode()
    return head + x, {"Content-Type": "application/octet-stream",
                      "Inference-Header-Content-Length": str(len(head))}


def grpc_run(target: str, shape: list[int], seconds: int) -> dict:
    """One run of benchmarks/grpc_load.py on CPU 1."""
    out = subprocess.run(["taskset", "-c", "1", sys.executable, "-m", "benchmarks.grpc_load",
                          target, "--shape", ",".join(map(str, shape)), "--seconds",
                          str(seconds)], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def start_triton(python: str, encoder: Path, work: Path) -> tuple[Proc, str]:
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    # the Python backend stub must load this interpreter's libpython, not the system's
    libdir = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_config_var("
                             "'LIBDIR'))"], capture_output=True, text=True).stdout.strip()
    env = {"LD_LIBRARY_PATH": libdir or sysconfig.get_config_var("LIBDIR")}
    popen = _spawn([python, str(ROOT / "benchmarks/peers/triton_encode.py"), str(encoder),
                    str(http), str(grpc_port), str(metrics)], env, work / "triton.log")
    # the model's own readiness: /v2/health/ready answers 200 ~2 s before pytriton has loaded
    # the model, and the first cell's requests were then 404s (fast ones, counted as failed)
    return Proc(popen, f"http://127.0.0.1:{http}", "/v2/models/encoder/ready",
                log=work / "triton.log"), f"127.0.0.1:{grpc_port}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--triton-python", required=True)
    p.add_argument("--repository", default="models")
    p.add_argument("--model", default="digits")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--out", default="results/bench-p6.json")
    p.add_argument("--baseline", type=Path, default=None,
                   help="another checkout whose server runs beside this one, interleaved")
    a = p.parse_args(argv)
    repo = Path(a.repository)
    vdir = repo / a.model / str(max(list_versions(repo, a.model)))
    shape = [1, *json.loads((vdir / "manifest.json").read_text())["input"]["shape"]]
    body, headers = binary_infer(shape)
    work = Path(tempfile.mkdtemp(prefix="vae-p6-"))
    triton, triton_grpc = start_triton(a.triton_python, vdir / "encoder.onnx", work)
    # both up together, their runs interleaved: the machine's drift falls on both sides
    with contextlib.ExitStack() as stack:
        stack.enter_context(triton)
        sides = [("this service", stack.enter_context(start_bentoml(repo, a.model, {}, work)))]
        if a.baseline is not None:
            sides.append(("baseline", stack.enter_context(
                start_bentoml(repo, a.model, {}, work, cwd=a.baseline))))
        path = "/v2/models/encoder/infer"
        http = cells([(triton.url + path, body)] + [(srv.url + path, body) for _, srv in sides],
                     64, a.seconds, work, headers)
        grpc_rows = [summary(rs, "errors") for rs in interleaved(
            [functools.partial(grpc_run, t, shape)
             for t in [triton_grpc] + [srv.grpc_url for _, srv in sides]], a.seconds)]
    rows = [{"row": "Triton, V2 HTTP binary", **http[0]}, {"row": "Triton, gRPC", **grpc_rows[0]}]
    for i, (name, _) in enumerate(sides, start=1):
        rows += [{"row": f"{name}, V2 HTTP binary", **http[i]},
                 {"row": f"{name}, gRPC", **grpc_rows[i]}]
    for r in rows:
        print(json.dumps(r))
    print("\n| row | req/s (median of 3) | p50 ms | p99 ms | failed | runs |\n"
          "|---|---|---|---|---|---|")
    for r in rows:  # failed: non-2xx answers (HTTP) or RPC errors (gRPC), all runs together
        failed = r.get("non2xx", r.get("errors", 0))
        print(f"| {r['row']} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {failed} "
              f"| {r['runs']} |")
    for proto in ("V2 HTTP binary", "gRPC"):
        theirs = next(r for r in rows if r["row"] == f"Triton, {proto}")
        for name, _ in sides:
            ours_r = next(r for r in rows if r["row"] == f"{name}, {proto}")
            print(f"{proto}: {name} / Triton = {ours_r['rps'] / theirs['rps']:.2f}x")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
