"""Which tensor encoding is fastest end to end: JSON arrays, npy or PNG, in and out.

    python -m benchmarks.encodings --url http://127.0.0.1:3000 [--items 1,64]

Sends /reconstruct requests (images in, images out in the same encoding) over one keep-alive
connection, the three encodings interleaved round by round so that machine noise hits them
alike, and prints the median time per request, client encode/decode included.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import time

import httpx
import numpy as np
from PIL import Image


def payload(x: np.ndarray, fmt: str) -> object:
    if fmt == "json":
        return x.tolist()
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, x, allow_pickle=False)
        return {"npy": base64.b64encode(buf.getvalue()).decode()}
    pngs = []
    for item in np.rint(x * 255).astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(item[0]).save(buf, format="PNG")
        pngs.append(base64.b64encode(buf.getvalue()).decode())
    return {"png": pngs}


def decode(out: object, fmt: str) -> np.ndarray:
    if fmt == "json":
        return np.asarray(out, dtype=np.float32)
    if fmt == "npy":
        return np.load(io.BytesIO(base64.b64decode(out["npy"])), allow_pickle=False)
    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(p))))
                     for p in out["png"]]).astype(np.float32) / 255.0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.encodings")
    p.add_argument("--url", default="http://127.0.0.1:3000")
    p.add_argument("--items", default="1,64")
    p.add_argument("--requests", type=int, default=100, help="per encoding and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    with httpx.Client(base_url=args.url, timeout=60) as c:
        shape = c.post("/model", json={}).json()["input"]["shape"]
        print("| items per request | encoding | ms per request (median) | vs fastest |")
        print("|---|---|---|---|")
        for n in [int(v) for v in args.items.split(",")]:
            x = np.random.default_rng(0).random((n, *shape)).astype(np.float32)
            times: dict[str, list[float]] = {f: [] for f in ("json", "npy", "png")}
            for _ in range(args.rounds):
                for fmt in times:
                    start = time.perf_counter()
                    for _ in range(args.requests):
                        r = c.post("/reconstruct", json={"inputs": payload(x, fmt),
                                                         "output_format": fmt})
                        r.raise_for_status()
                        decode(r.json()["outputs"], fmt)
                    times[fmt].append(1000 * (time.perf_counter() - start) / args.requests)
            med = {f: statistics.median(t) for f, t in times.items()}
            best = min(med.values())
            for f, ms in med.items():
                print(f"| {n} | {f} | {ms:.2f} | {ms / best:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
