"""Figures of a built image (`make image-figures`): unpacked and compressed size, what takes the
space, time from start to /readyz 200 and the RSS of the running service (median of --runs
starts of the image's own CMD via buildah run).

    python -m benchmarks.image_figures [--image localhost/vae-serving:latest] [--runs 5]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import tempfile
from pathlib import Path

from support import image
from support.servers import rss_mb


def sizes(name: str, work: Path) -> dict[str, float]:
    """MB: unpacked (the root filesystem), docker-archive, and that archive gzip'd (what a
    registry would store, layer by layer)."""
    with image.container(name) as box:
        unpacked = subprocess.run(["du", "-sm", "--apparent-size", str(box.root)],
                                  capture_output=True, text=True, check=True).stdout.split()[0]
        parts = {}
        for part in ("venv", "usr", "models", "app"):
            out = subprocess.run(["du", "-sm", "--apparent-size", str(box.root / part)],
                                 capture_output=True, text=True).stdout.split()
            parts[part] = float(out[0]) if out else 0.0
        site = next((box.root / "venv" / "lib").glob("python3*/site-packages"))
        biggest = subprocess.run(f"du -sm --apparent-size {site}/* | sort -rn | head -8",
                                 shell=True, capture_output=True, text=True).stdout
    tar = work / "image.tar"
    image.buildah("push", name, f"docker-archive:{tar}:{name.split('/')[-1]}", timeout=900)
    with open(tar, "rb") as f, gzip.open(work / "image.tar.gz", "wb", compresslevel=6) as g:
        while chunk := f.read(1 << 20):
            g.write(chunk)
    return {"unpacked": float(unpacked), "archive": tar.stat().st_size / 2**20,
            "gzip": (work / "image.tar.gz").stat().st_size / 2**20, **parts,
            "biggest": biggest.replace(str(site) + "/", "")}


def starts(name: str, runs: int, work: Path) -> tuple[list[float], list[float]]:
    ready, rss = [], []
    with image.container(name) as box:
        for _ in range(runs):
            with box.serve(work) as srv:
                ready.append(srv.ready_s)
                procs = rss_mb(srv.proc.pid)
                # the service's processes: not buildah itself, which starts them
                rss.append(sum(mb for key, mb in procs.items()
                               if not key.split(" ", 1)[1].startswith("buildah")))
    return ready, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=image.IMAGE)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        s = sizes(a.image, Path(tmp))
        ready, rss = starts(a.image, a.runs, Path(tmp))
    print(f"| {a.image} | MB |\n|---|---|")
    for key in ("unpacked", "archive", "gzip", "venv", "usr", "models", "app"):
        print(f"| {key} | {s[key]:.0f} |")
    print(f"| start to /readyz 200, s (median of {a.runs}) | {statistics.median(ready):.2f} "
          f"(min {min(ready):.2f}, max {max(ready):.2f}) |")
    print(f"| RSS of the service's processes, MB (median) | {statistics.median(rss):.0f} |")
    print("\nlargest packages (MB):\n" + s["biggest"])


if __name__ == "__main__":
    main()
