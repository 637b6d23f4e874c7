"""Several models in one service, measured (docs/BENCHMARKS.md, "Several models"):

- P7: two models under a mixed load (one-item JSON /encode, half the connections to each
  model) served by one service (VAE_MODELS=a,b, requests naming their model) vs by two
  single-model services, every server pinned to CPU 0 and the load (two wrk, one per model) to
  CPU 1: total req/s, each model's p99, total RSS. Runs interleaved (serving.interleaved).
- RSS added per model: a service with each model alone and with both (every process of the
  server, after a warm-up call of each model).

    python -m benchmarks.models --repository models --models digits,mnist --seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
from pathlib import Path

import httpx

from benchmarks.serving import images, interleaved, summary, wrk
from modelrepo.repository import list_versions
from support.servers import Proc, rss_mb, start_bentoml


def _body(repo: Path, model: str, named: bool) -> bytes:
    manifest = repo / model / str(max(list_versions(repo, model))) / "manifest.json"
    shape = json.loads(manifest.read_text())["input"]["shape"]
    fields = {"inputs": images(shape, 1).tolist(), **({"model": model} if named else {})}
    return json.dumps(fields).encode()


def mixed(targets: list[tuple[str, bytes]], conns: int, seconds: int, work: Path) -> dict:
    """Both models' loads at once (a wrk each, `conns` connections each, both on CPU 1):
    total req/s and each side's p99."""
    out: list[dict] = [{} for _ in targets]

    def one(i: int) -> None:
        sub = work / f"side{i}"
        sub.mkdir(exist_ok=True)
        out[i] = wrk(targets[i][0], targets[i][1], conns, seconds, sub)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": sum(o["rps"] for o in out), "p50": max(o["p50"] for o in out),
            "p99": max(o["p99"] for o in out), "non2xx": sum(o["non2xx"] for o in out),
            "sides": [{"rps": o["rps"], "p99": o["p99"]} for o in out]}


def total_rss(servers: list[Proc]) -> float:
    return round(sum(sum(rss_mb(s.proc.pid).values()) for s in servers), 1)


def warm(server: Proc, bodies: list[bytes]) -> None:
    for body in bodies:
        r = httpx.post(server.url + "/encode", content=body, timeout=60,
                       headers={"content-type": "application/json"})
        r.raise_for_status()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repository", default="models")
    p.add_argument("--models", default="digits,mnist")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--conns", type=int, default=32, help="per model")
    p.add_argument("--out", default="results/bench-models.json")
    a = p.parse_args(argv)
    repo, names = Path(a.repository).resolve(), a.models.split(",")
    work = Path(tempfile.mkdtemp(prefix="vae-bench-models-"))
    rows: list[dict] = []
    named = [_body(repo, m, True) for m in names]
    with contextlib.ExitStack() as stack:
        one = stack.enter_context(start_bentoml(repo, names[0], {"VAE_MODELS": a.models},
                                                work))
        alone = [stack.enter_context(start_bentoml(repo, m, {}, work)) for m in names]
        warm(one, named)
        for srv, m in zip(alone, names, strict=True):
            warm(srv, [_body(repo, m, False)])
        sides = [lambda s: mixed([(one.url + "/encode", b) for b in named], a.conns, s, work),
                 lambda s: mixed([(srv.url + "/encode", _body(repo, m, False))
                                  for srv, m in zip(alone, names, strict=True)],
                                 a.conns, s, work)]
        runs = interleaved(sides, a.seconds)
        for label, rs, servers in (("one service, both models", runs[0], [one]),
                                   ("two single-model services", runs[1], alone)):
            row = {"row": f"P7 {label}", **summary(rs, "non2xx"),
                   "p99_by_model": {m: sorted(r["sides"][i]["p99"] for r in rs)[1]
                                    for i, m in enumerate(names)},
                   "rss_mb": total_rss(servers)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for models in [[m] for m in names] + [names]:
        with start_bentoml(repo, models[0], {"VAE_MODELS": ",".join(models)}, work) as srv:
            warm(srv, [_body(repo, m, True) for m in models])
            row = {"row": f"RSS {','.join(models)}", "rss_mb": total_rss([srv]),
                   "by_process": rss_mb(srv.proc.pid)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    print_table(rows, names)


def print_table(rows: list[dict], names: list[str]) -> None:
    print("\n| P7: two models, mixed load | req/s (median of 3) | p99 ms by model | total RSS MB |")
    print("|---|---|---|---|")
    for r in rows:
        if r["row"].startswith("P7"):
            p99 = ", ".join(f"{m} {v:.1f}" for m, v in r["p99_by_model"].items())
            print(f"| {r['row'][3:]} | {r['rps']:,.0f} {r['runs']} | {p99} | {r['rss_mb']} |")
    rss = {r["row"][4:]: r["rss_mb"] for r in rows if r["row"].startswith("RSS ")}
    both = rss.get(",".join(names))
    print("\n| served | total RSS MB | added by the second model |")
    print("|---|---|---|")
    for key, mb in rss.items():
        added = [f"{m}: +{both - rss[o]:.1f} MB" for m, o in zip(names, names[::-1], strict=True)
                 if key == ",".join(names) and o in rss] if both else []
        print(f"| {key} | {mb} | {'; '.join(added)} |")


if __name__ == "__main__":
    main()
