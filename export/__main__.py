"""`python -m export --checkpoint runs/digits/checkpoint.pt --repository models --name digits`:
a training checkpoint becomes a published model version (export/onnx_export.py)."""

from __future__ import annotations

import argparse
import logging

from export.onnx_export import export_checkpoint, log
from modelrepo.manifest import Manifest
from modelrepo.repository import MANIFEST, model_name_arg


def main(argv: list[str] | None = None) -> None:
    # our own progress at INFO; the quantizer's and exporter's chatter only when it warns
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    p = argparse.ArgumentParser(prog="python -m export",
                                description="Checkpoint -> models/<name>/<version>/")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--repository", default="models")
    p.add_argument("--name", required=True, type=model_name_arg)
    p.add_argument("--version", type=int, default=None, help="default: the next free integer")
    p.add_argument("--variants", default="fp16,int8", help="comma-separated; '' for none")
    p.add_argument("--reload-data", action="store_true",
                   help="rebuild the held-out items from the training config's data (for a "
                        "checkpoint that records none); fails when that data is missing")
    args = p.parse_args(argv)
    kinds = tuple(v for v in args.variants.split(",") if v)
    try:
        path = export_checkpoint(args.checkpoint, args.repository, args.name, args.version,
                                 kinds, args.reload_data)
    except ValueError as exc:
        raise SystemExit(f"export: {exc}") from None
    m = Manifest.model_validate_json((path / MANIFEST).read_text())
    log.info("wrote %s (parity: encoder %.2e, decoder %.2e)", path,
             m.parity.encoder_max_abs_diff, m.parity.decoder_max_abs_diff)


main()
