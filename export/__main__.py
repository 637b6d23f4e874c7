"""`vae-export --checkpoint runs/digits/checkpoint.pt --repository models --name digits`
(also `python -m export`): a training checkpoint becomes a published model version
(export/onnx_export.py): two ONNX graphs, their variants and manifest.json, parity-checked."""

from __future__ import annotations

import logging
from pathlib import Path

from export.onnx_export import export_checkpoint, log
from modelrepo.cli import Parser, usage_error
from modelrepo.manifest import Manifest
from modelrepo.repository import MANIFEST, model_name_arg


def main(argv: list[str] | None = None) -> None:
    # our own progress at INFO; the quantizer's and exporter's chatter only when it warns
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    p = Parser(prog="vae-export", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by vae-train")
    p.add_argument("--repository", default="models",
                   help="the model repository: versions go to REPOSITORY/NAME/VERSION/")
    p.add_argument("--name", required=True, type=model_name_arg,
                   help="the model's name (lower-case letters, digits, '_' and '-')")
    p.add_argument("--version", type=int, default=None, help="default: the next free integer")
    p.add_argument("--variants", default="fp16,int8",
                   help="extra graph pairs to write beside fp32, comma-separated (fp16, int8); "
                        "'' for none")
    p.add_argument("--reload-data", action="store_true",
                   help="rebuild the held-out items from the training config's data (for a "
                        "checkpoint that records none); fails when that data is missing")
    args = p.parse_args(argv)
    kinds = tuple(v for v in args.variants.split(",") if v)
    if not Path(args.checkpoint).is_file():
        usage_error("vae-export", f"--checkpoint {args.checkpoint}: no such file")
    if set(kinds) - {"fp16", "int8"}:
        usage_error("vae-export", f"--variants {args.variants}: only fp16 and int8 exist")
    if args.version is not None and args.version < 1:
        usage_error("vae-export", f"--version {args.version}: must be a positive integer")
    try:
        path = export_checkpoint(args.checkpoint, args.repository, args.name, args.version,
                                 kinds, args.reload_data)
    except ValueError as exc:
        raise SystemExit(f"export: {exc}") from None
    m = Manifest.model_validate_json((path / MANIFEST).read_text())
    log.info("wrote %s (parity: encoder %.2e, decoder %.2e)", path,
             m.parity.encoder_max_abs_diff, m.parity.decoder_max_abs_diff)


if __name__ == "__main__":
    main()
