"""`vae-client` (also `python -m service.client`): the client's command line (sample to a PNG
grid, the model's metadata, the served models), over service/client.py."""

from __future__ import annotations

import argparse
import json
import sys

import httpx
import numpy as np

from modelrepo.cli import Parser
from service.client import Retry, VAEClient, VAEError


def save_grid(x: np.ndarray, path: str, cols: int = 8, min_cell: int = 64) -> None:
    """[N, C, H, W] in [0, 1] -> one PNG grid, each image enlarged (nearest neighbour, whole
    multiples) to at least `min_cell` pixels and separated by a 2-pixel gap, so that 8x8 digits
    are visible in an image viewer."""
    from PIL import Image

    scale = max(1, -(-min_cell // max(x.shape[2:])))
    x = x.repeat(scale, axis=2).repeat(scale, axis=3)
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, c, h, w = x.shape
    rows = -(-n // cols)
    grid = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    px = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = px[i]
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)


def main(argv: list[str] | None = None) -> int:
    url = argparse.ArgumentParser(add_help=False)  # --url before or after the subcommand
    url.add_argument("--url", default=argparse.SUPPRESS,
                     help="the service's HTTP address (default http://127.0.0.1:3000)")
    url.add_argument("--model", default=argparse.SUPPRESS,
                     help="the served model to ask (default: the service's default model)")
    p = Parser(prog="vae-client", parents=[url],
               description="Call a running VAE service (see also the Python client, "
                           "service/client.py).")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", parents=[url],
                       help="draw n images and save them as one PNG grid")
    s.add_argument("--n", type=int, default=16, help="images to draw")
    s.add_argument("--temperature", type=float, default=1.0,
                   help="scale of the prior's standard deviation (> 0)")
    s.add_argument("--seed", type=int, help="for the same images again (default: random)")
    s.add_argument("--out", default="samples.png", help="the PNG file to write")
    sub.add_parser("model", parents=[url], help="print the served model's metadata")
    sub.add_parser("models", parents=[url], help="list the served models and their versions")
    args = p.parse_args(argv)
    address = getattr(args, "url", "http://127.0.0.1:3000")
    try:  # a CLI user gets one line, not a traceback; waiting 30 s for a server that is
        # not there helps nobody, so only a short retry budget
        with VAEClient(address, retry=Retry(budget_s=3.0),
                       model=getattr(args, "model", None)) as vae:
            if args.cmd == "model":
                print(json.dumps(vae.model(), indent=2))
            elif args.cmd == "models":
                for m in vae.models():
                    default = "  (default)" if m["default"] else ""
                    print(f"{m['name']}  versions {m['versions']}{default}")
            else:
                x = vae.sample(args.n, args.temperature, args.seed)["x"]
                save_grid(x, args.out)
                print(f"wrote {args.out}: {len(x)} samples")
    except httpx.TransportError as exc:
        print(f"error: no answer from {address} ({type(exc).__name__}: {exc}); is the service "
              "running (make serve), and is --url right?", file=sys.stderr)
        return 2
    except VAEError as exc:
        print(f"error: {address} answered {exc}", file=sys.stderr)
        return 1
    return 0
