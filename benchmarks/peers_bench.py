"""`make bench-peers`: this service against what a user would pick instead to serve the same
encoder graph, each as its documentation serves a model (benchmarks/peers/, run by the
interpreter of .venv-peers so that the service's pins never move):

- LitServe (a LitAPI with batching) and Ray Serve (`@serve.batch`): one-item JSON `/encode`;
- KServe's Python model server (`kserve.ModelServer`): V2 REST (JSON) and gRPC `encoder`.

Every server is pinned to CPU 0 and the load generator to CPU 1 (wrk for HTTP, the asyncio
client of benchmarks/grpc_load.py for gRPC), 64 requests in flight. A peer with batching
settings is first tried with each of a few documented ones (3 s each), and its best is kept.
Then all sides of a cell are up together and measured interleaved (a warm-up, then 3 runs of
--seconds each, medians), with the resident memory of each server's processes afterwards.

    python -m benchmarks.peers_bench --peers-python .venv-peers/bin/python --repository models
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.p6_triton import grpc_run
from benchmarks.serving import cells, interleaved, summary, wrk
from modelrepo.repository import list_versions
from support.servers import ROOT, Proc, _spawn, free_port, rss_mb, start_bentoml

PEERS = ROOT / "benchmarks" / "peers"
# (max batch, wait in seconds[, LitServe's fast_queue]): their examples batch with a few ms of
# wait; a batch of 1 is their no-batching setting
SETTINGS = {"litserve": [(64, 0.001, 0), (16, 0.005, 0), (1, 0.0, 0), (64, 0.001, 1),
                         (16, 0.005, 1)],
            "rayserve": [(64, 0.001), (16, 0.005), (1, 0.0)]}


def start(python: str, peer: str, encoder: Path, work: Path, setting: tuple = ()) -> Proc:
    port = free_port()
    args = [str(a) for a in setting]
    if peer == "kserve":
        grpc_port = free_port()
        popen = _spawn([python, str(PEERS / "kserve_encode.py"), str(encoder), str(port),
                        str(grpc_port)], {}, work / f"{peer}-{port}.log")
        return Proc(popen, f"http://127.0.0.1:{port}", "/v2/models/encoder/ready",
                    grpc_url=f"127.0.0.1:{grpc_port}", log=work / f"{peer}-{port}.log")
    popen = _spawn([python, str(PEERS / f"{peer}_encode.py"), str(encoder), str(port), *args],
                   # no ~/.ray/auth_token left behind (it turns token auth on for later
                   # clusters of this user: tests/test_jobs_ray.py)
                   {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"},
                   work / f"{peer}-{port}.log")
    return Proc(popen, f"http://127.0.0.1:{port}", "/encode", any_answer=True,
                log=work / f"{peer}-{port}.log")


def answering(srv: Proc, path: str, body: bytes, timeout: float = 120) -> Proc:
    """Until `path` answers `body` with 200 (a peer's HTTP server can be up before its model)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.post(srv.url + path, content=body, timeout=10,
                          headers={"Content-Type": "application/json"}).status_code == 200:
                return srv
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{srv.url}{path} never answered 200: {srv.output()}")


def best_setting(python: str, peer: str, encoder: Path, body: bytes, work: Path) -> tuple:
    """Each documented setting for 3 s (after a 2 s warm-up): the one with the most req/s."""
    rates = {}
    for setting in SETTINGS[peer]:
        with start(python, peer, encoder, work, setting) as srv:
            answering(srv, "/encode", body)
            wrk(srv.url + "/encode", body, 64, 2, work)
            rates[setting] = wrk(srv.url + "/encode", body, 64, 3, work)["rps"]
        print(f"{peer} {setting}: {rates[setting]:,.0f} req/s", flush=True)
    return max(rates, key=rates.get)


def memory(srv: Proc) -> float:
    return round(sum(rss_mb(srv.proc.pid).values()), 1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--peers-python", required=True)
    p.add_argument("--repository", default="models")
    p.add_argument("--model", default="digits")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--out", default="results/bench-peers.json")
    a = p.parse_args(argv)
    repo = Path(a.repository)
    vdir = repo / a.model / str(max(list_versions(repo, a.model)))
    shape = [1, *json.loads((vdir / "manifest.json").read_text())["input"]["shape"]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    one = json.dumps({"inputs": x.tolist()}).encode()
    v2 = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32",
                                 "data": x.ravel().tolist()}]}).encode()
    work = Path(tempfile.mkdtemp(prefix="vae-peers-"))
    encoder = vdir / "encoder.onnx"
    chosen = {peer: best_setting(a.peers_python, peer, encoder, one, work) for peer in SETTINGS}
    rows = []

    def add(name: str, cell: dict, srv: Proc, **extra) -> None:
        rows.append({"row": name, **cell, "rss_mb": memory(srv), **extra})
        print(json.dumps(rows[-1]), flush=True)

    # one peer at a time beside the service: Ray's own processes keep the core busy while idle
    for peer, name in (("litserve", "LitServe"), ("rayserve", "Ray Serve")):
        with contextlib.ExitStack() as stack:
            ours = stack.enter_context(start_bentoml(repo, a.model, {}, work))
            srv = answering(stack.enter_context(start(a.peers_python, peer, encoder, work,
                                                      chosen[peer])), "/encode", one)
            got = cells([(s.url + "/encode", one) for s in (ours, srv)], 64, a.seconds, work)
            add(f"one-item JSON /encode, beside {name}: this service", got[0], ours)
            add(f"one-item JSON /encode, beside {name}: {name}", got[1], srv,
                setting=chosen[peer])
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(start_bentoml(repo, a.model, {}, work))
        ks = stack.enter_context(start(a.peers_python, "kserve", encoder, work))
        path = "/v2/models/encoder/infer"
        answering(ks, path, v2)
        got = cells([(s.url + path, v2) for s in (ours, ks)], 64, a.seconds, work)
        add("V2 REST JSON encoder: this service", got[0], ours)
        add("V2 REST JSON encoder: KServe", got[1], ks)
        runs = interleaved([functools.partial(grpc_run, s.grpc_url, shape) for s in (ours, ks)],
                           a.seconds)
        add("V2 gRPC encoder: this service", summary(runs[0], "errors"), ours)
        add("V2 gRPC encoder: KServe", summary(runs[1], "errors"), ks)
    print("\n| row | req/s (median of 3) | p50 ms | p99 ms | failed | RSS MB | this service / "
          "peer |\n|---|---|---|---|---|---|---|")
    for r in rows:
        group = r["row"].split(":")[0]
        ours_r = next(o for o in rows if o["row"] == f"{group}: this service")
        ratio = "" if r is ours_r else f"{ours_r['rps'] / r['rps']:.2f}×"
        failed = r.get("non2xx", r.get("errors", 0))
        setting = "" if "setting" not in r else f" (batch {r['setting'][0]}, wait " \
            f"{r['setting'][1]} s{', fast_queue' if r['setting'][2:3] == [1] else ''})"
        print(f"| {r['row']}{setting} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
              f"{failed} | {r['rss_mb']:,.0f} | {ratio} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
