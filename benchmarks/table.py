"""`make bench`'s one table: every row P1–P6 and P8 (peers) from the JSON the benchmark
scripts wrote in the same run, each with its goal (docs/BENCHMARKS.md), what was measured,
and whether the goal was met.

    python -m benchmarks.table --p1 results/bench-p1.json --serving results/bench.json \
        --p6 results/bench-p6.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

MET, MISSED = "met", "**missed**"


def _status(ok: bool) -> str:
    return MET if ok else MISSED


def _ratio_row(row: str, what: str, goal: float, ours: dict, theirs: dict,
               p99_no_worse: bool = False) -> tuple[str, str, str, str, str]:
    ratio = ours["rps"] / theirs["rps"]
    ok = ratio >= goal and (not p99_no_worse or ours["p99"] <= theirs["p99"])
    goal_text = f"≥ {goal}×" + (", p99 no worse" if p99_no_worse else "")
    return (row, what, goal_text, f"{ours['rps']:,.0f} vs {theirs['rps']:,.0f} req/s = "
            f"{ratio:.2f}× (p99 {ours['p99']:.1f} vs {theirs['p99']:.1f} ms)", _status(ok))


def _p1_rows(p1: list[dict]) -> list[tuple[str, str, str, str, str]]:
    out = []
    for model in dict.fromkeys(r["model"] for r in p1):
        mine = [r for r in p1 if r["model"] == model]
        at = {b: [r["ratio"] for r in mine if r["batch"] == b] for b in (1, 256)}
        if not at[1] or not at[256]:
            out.append(("P1", f"{model}: onnxruntime vs PyTorch eager", "≥ 2× at batch 1, "
                        "≥ 1.0× at 256", "batch 1 or 256 not measured", MISSED))
            continue
        ok = min(at[1]) >= 2.0 and min(at[256]) >= 1.0
        out.append(("P1", f"{model}: onnxruntime vs PyTorch eager, items/s (1 and 2 threads)",
                    "≥ 2× at batch 1, ≥ 1.0× at 256", f"batch 1: {min(at[1]):.2f}–"
                    f"{max(at[1]):.2f}×; batch 256: {min(at[256]):.2f}–{max(at[256]):.2f}×",
                    _status(ok)))
    return out


def table_rows(p1: list[dict] | None, serving: list[dict] | None,
               p6: list[dict] | None) -> list[tuple[str, str, str, str, str]]:
    """(row, what, goal, measured, status) for every benchmark row; None: that script's
    results are absent, and its rows say so."""
    absent = "not measured (no results file)"
    rows: list[tuple[str, str, str, str, str]] = []
    rows += _p1_rows(p1) if p1 is not None else [("P1", "onnxruntime vs PyTorch eager",
                                                   "≥ 2× at 1, ≥ 1.0× at 256", absent, MISSED)]
    s = {r["row"]: r for r in serving or []}
    if "P2 this service" in s and "P2 naive peer" in s:
        rows.append(_ratio_row("P2", "/encode, 1 item JSON, 64 connections: this service vs "
                               "the naive peer", 1.5, s["P2 this service"], s["P2 naive peer"]))
    else:
        rows.append(("P2", "/encode vs the naive peer", "≥ 1.5×", absent, MISSED))
    p3 = s.get("P3 /encode 256 npy")
    if p3 is not None:
        share = p3["items_per_s"] / p3["ceiling_items_per_s"]
        rows.append(("P3", "/encode, 256 MNIST items npy: items/s vs in-process onnxruntime",
                     "≥ 50 %", f"{p3['items_per_s']:,.0f} vs {p3['ceiling_items_per_s']:,.0f} "
                     f"items/s = {share:.0%}", _status(share >= 0.5)))
    else:
        rows.append(("P3", "256-item npy vs in-process onnxruntime", "≥ 50 %", absent, MISSED))
    p4 = sorted({k.split()[1] for k in s if k.startswith("P4 ")}, key=lambda m: m != "mnist")
    for model in p4:
        on, off = s.get(f"P4 {model} batching=true"), s.get(f"P4 {model} batching=false")
        if on is None or off is None:
            continue
        row = _ratio_row("P4", f"batching on vs off, 1 item npy, 64 connections, {model}",
                         1.5, on, off, p99_no_worse=True)
        rows.append(row if model == "mnist" else (*row[:2], "(reported)", row[3], "—"))
    if "mnist" not in p4:
        rows.append(("P4", "batching on vs off, MNIST conv", "≥ 1.5×", absent, MISSED))
    p5 = [r for r in serving or [] if "cold_start_s" in r]
    if not p5:
        rows.append(("P5", "cold start, RSS per process", "≤ 5 s, ≤ 300 MB", absent, MISSED))
    for r in p5:
        rss = max(r["rss_mb"].values())
        rows.append(("P5", f"{r['row'].split()[1]}: cold start to /readyz 200, RSS per "
                     "process", "≤ 5 s, ≤ 300 MB", f"{r['cold_start_s']:.2f} s, "
                     f"{' + '.join(f'{v:.0f}' for v in r['rss_mb'].values())} MB",
                     _status(r["cold_start_s"] <= 5.0 and rss <= 300.0)))
    t = {r["row"]: r for r in p6 or []}
    for proto in ("V2 HTTP binary", "gRPC"):
        ours, theirs = t.get(f"this service, {proto}"), t.get(f"Triton, {proto}")
        if ours is None or theirs is None:
            rows.append(("P6", f"{proto}: this service vs Triton", "≥ 1.0×", absent, MISSED))
        else:
            rows.append(_ratio_row("P6", f"encode, 1 item, 64 in flight, {proto}: this "
                                   "service vs Triton", 1.0, ours, theirs))
    return rows


def peer_rows(peers: list[dict] | None) -> list[tuple[str, str, str, str, str]]:
    """P8 (benchmarks/peers_bench.py): this service vs LitServe, Ray Serve and KServe, each
    cell against the service measured beside it."""
    if peers is None:
        return [("P8", "this service vs LitServe, Ray Serve, KServe", "≥ 1.5×",
                 "not measured (no results file)", MISSED)]
    rows = []
    for r in peers:
        group, _, who = r["row"].rpartition(": ")
        if who != "this service":
            ours = next(o for o in peers if o["row"] == f"{group}: this service")
            rows.append(_ratio_row("P8", f"{group}: this service vs {who}", 1.5, ours, r))
    return rows


def _load(path: str | None) -> Any:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--p1", default="results/bench-p1.json")
    p.add_argument("--serving", default="results/bench.json")
    p.add_argument("--p6", default="results/bench-p6.json")
    p.add_argument("--peers", default="results/bench-peers.json")
    a = p.parse_args(argv)
    for path in (a.p1, a.serving, a.p6, a.peers):  # when each was measured: one run's rows only
        if Path(path).exists():
            when = time.localtime(Path(path).stat().st_mtime)
            print(f"{path}: written {time.strftime('%Y-%m-%d %H:%M:%S %Z', when)}")
    print("\n| row | what | goal | measured | status |\n|---|---|---|---|---|")
    for row in table_rows(_load(a.p1), _load(a.serving), _load(a.p6)) + \
            peer_rows(_load(a.peers)):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
