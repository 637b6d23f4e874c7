"""Speed of the graph variants of an exported version: fp32 vs fp16 vs int8 in onnxruntime (CPU).

    python -m benchmarks.variants --version-dir models/mnist/1 [--threads 1]

Encoder + decoder items/s per batch size, the variants interleaved round by round, medians.
The quality side (held-out -ELBO per variant) is in the version's manifest.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.p1_onnx_vs_torch import _time
from modelrepo.manifest import Manifest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.variants")
    p.add_argument("--version-dir", required=True)
    p.add_argument("--batches", default="1,32,256")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args(argv)
    vdir = Path(args.version_dir)
    m = Manifest.model_validate_json((vdir / "manifest.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    sessions = {}
    for variant in ["fp32", *m.variants]:
        pair = m.graph_pair(variant)
        sessions[variant] = [ort.InferenceSession(str(vdir / pair[g].path), opts,
                                                  providers=["CPUExecutionProvider"])
                             for g in ("encoder", "decoder")]
    elbo = {"fp32": None, **{k: v.heldout_neg_elbo for k, v in m.variants.items()}}
    print(f"{m.name}/{m.version}, {args.threads} thread(s)")
    print("| batch | variant | items/s | vs fp32 | held-out -ELBO (manifest) |")
    print("|---|---|---|---|---|")
    for b in [int(v) for v in args.batches.split(",")]:
        x = np.random.default_rng(0).random((b, *m.input.shape), dtype=np.float32)
        times: dict[str, list[float]] = {v: [] for v in sessions}
        for _ in range(args.rounds):
            for v, (enc, dec) in sessions.items():
                def run(enc=enc, dec=dec, x=x) -> None:
                    mu, _ = enc.run(["mu", "logvar"], {"x": x})
                    dec.run(["x"], {"z": mu})
                times[v].append(_time(run, args.seconds))
        ips = {v: b / statistics.median(t) for v, t in times.items()}
        for v, r in ips.items():
            e = "" if elbo[v] is None else f"{elbo[v]:.3f}"
            print(f"| {b} | {v} | {r:,.0f} | {r / ips['fp32']:.2f}× | {e} |", flush=True)


if __name__ == "__main__":
    main()
