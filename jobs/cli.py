"""`vae-jobs` (also `python -m jobs`): encode, score or reconstruct a whole data set into
Parquet, on this machine or on a Ray cluster (docs/JOBS.md).

    vae-jobs encode --repository models --model mnist --input images/ --output mu.parquet
    vae-jobs score --repository models --model mnist --input t10k-images-idx3-ubyte.gz \\
        --output scores.parquet --engine ray --ray-address 10.0.0.1:6379 --workers 8

Exit status: 0 every item written; 3 some items refused (listed in OUTPUT/_errors/, with the
reason); 2 a usage error; 1 the job failed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

from jobs.inputs import InputSpec
from jobs.work import ENCODE_FIELDS, OPS, JobSpec, latest_version
from modelrepo.cli import Parser, usage_error
from modelrepo.repository import model_name_arg

PARTIAL = 3


def spec_to_json(spec: JobSpec) -> str:
    return json.dumps(asdict(spec))


def spec_from_json(text: str) -> JobSpec:
    d = json.loads(text)
    d["input"] = InputSpec(**d["input"])
    d["fields"] = tuple(d["fields"])
    return JobSpec(**d)


def parser() -> Parser:
    p = Parser(prog="vae-jobs", description=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="op", required=True, metavar="{" + ",".join(OPS) + "}")
    for op, text in zip(OPS, ("posteriors: mu, sigma or logvar, optional samples of z",
                              "-ELBO, IWAE NLL and held-out percentile per item",
                              "the decoded mean of each item"), strict=True):
        s = sub.add_parser(op, help=text, description=f"{op}: {text}.")
        s.add_argument("--repository", default="models", help="the model repository")
        s.add_argument("--model", required=True, type=model_name_arg, help="the model's name")
        s.add_argument("--version", type=int, default=None, help="default: the highest")
        s.add_argument("--input", required=True,
                       help=".npy, .npz, IDX (.gz or not), .parquet, or a folder of images")
        s.add_argument("--key", help=".npz: the array to read (default: the only one)")
        s.add_argument("--column", help=".parquet: the items' column (arrays, or encoded "
                                        "images as bytes; default: the first)")
        s.add_argument("--id-column", help=".parquet: the ids' column (default: row number)")
        s.add_argument("--output", required=True,
                       help="a folder of Parquet parts, read by pyarrow as one table")
        s.add_argument("--resume", action="store_true",
                       help="continue an interrupted job: shards already written are kept")
        s.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="this process, or Ray Data over a cluster")
        s.add_argument("--ray-address", default=None,
                       help="ray: the cluster (host:port); default: RAY_ADDRESS, else a "
                            "local Ray started for the job")
        s.add_argument("--workers", type=int, default=2, help="ray: actors, one CPU each")
        s.add_argument("--threads", type=int, default=0,
                       help="onnxruntime threads per session (0: every core for local, "
                            "1 per actor for ray)")
        s.add_argument("--shard-size", type=int, default=4096,
                       help="items per output part (the unit of resume and retry)")
        s.add_argument("--batch-size", type=int, default=256, help="items per model run")
        s.add_argument("--seed", type=int, default=0, help="draws of eps: per item, from "
                                                           "(seed, the item's position)")
        if op == "encode":
            s.add_argument("--fields", default="mu,sigma",
                           help=f"comma-separated, of {', '.join(ENCODE_FIELDS)}")
            s.add_argument("--samples", type=int, default=0, help="z draws per item (column z)")
        if op == "score":
            s.add_argument("--k", type=int, default=16,
                           help="draws per item for nll_iwae (and neg_elbo when sampled)")
            s.add_argument("--estimator", choices=("sigma_points", "sampled"),
                           default="sigma_points", help="neg_elbo's estimator, as /score's")
    return p


def build_spec(a) -> JobSpec:
    for name in ("workers", "shard_size", "batch_size"):
        if getattr(a, name) < 1:
            usage_error("vae-jobs", f"--{name.replace('_', '-')} {getattr(a, name)}: must be "
                                    "at least 1")
    fields = tuple(f for f in getattr(a, "fields", "mu,sigma").split(",") if f)
    if a.op == "encode" and (not fields or set(fields) - set(ENCODE_FIELDS)):
        usage_error("vae-jobs", f"--fields {a.fields}: choose from {', '.join(ENCODE_FIELDS)}")
    if getattr(a, "k", 1) < 1 or getattr(a, "samples", 0) < 0:
        usage_error("vae-jobs", "--k must be at least 1 and --samples at least 0")
    try:
        version = a.version or latest_version(a.repository, a.model)
    except ValueError as exc:
        usage_error("vae-jobs", str(exc))
    return JobSpec(a.op, str(Path(a.repository).resolve()), a.model, version,
                   InputSpec(str(Path(a.input).resolve()), a.key, a.column, a.id_column),
                   str(Path(a.output).resolve()), a.shard_size, a.batch_size, fields,
                   getattr(a, "samples", 0), getattr(a, "k", 16), getattr(a, "estimator",
                                                                         "sigma_points"),
                   a.seed, a.threads or (1 if a.engine == "ray" else 0))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    a = parser().parse_args(argv)
    spec = build_spec(a)
    out = Path(spec.output)
    if out.exists() and any(out.iterdir()) and not a.resume:
        usage_error("vae-jobs", f"--output {a.output} exists; --resume continues it")
    from jobs.engines import Progress, pending_shards, run_local, run_ray, write_job_file
    from jobs.inputs import Source
    from modelrepo.manifest import Manifest

    manifest = Manifest.model_validate_json(
        (Path(spec.repository) / spec.model / str(spec.version) / "manifest.json").read_text())
    try:
        source = Source(spec.input, manifest.input.shape, tuple(manifest.input.range))
        total = len(source)
        write_job_file(spec, a.resume)
    except ValueError as exc:
        usage_error("vae-jobs", str(exc))
    todo = pending_shards(spec, total)
    done = total - sum(min(spec.shard_size, total - s * spec.shard_size) for s in todo)
    progress = Progress(total, done, f"{spec.op} {spec.model}/{spec.version}")
    written = refused = 0
    t0 = started = time.perf_counter()

    def on_ready() -> None:
        nonlocal started
        started = time.perf_counter()

    def on_shard(n: int, bad: int) -> None:
        nonlocal written, refused
        written, refused = written + n, refused + bad
        progress.add(n + bad)

    try:
        if a.engine == "local":
            run_local(spec, on_shard, on_ready)
        else:
            run_ray(spec, spec_to_json(spec), total, a.ray_address, a.workers, on_shard)
    finally:
        progress.close()
    end = time.perf_counter()
    rate = (written + refused) / max(end - started, 1e-9)  # the items' own time, after the
    # model was opened (local); on Ray, from the cluster's connection on
    print(f"{spec.op}: {written:,} items written, {refused:,} refused, in {end - t0:.1f} s "
          f"({rate:,.0f} items/s) -> {spec.output}"
          + (f"; refused items: {out / '_errors'}/" if refused else ""), flush=True)
    if refused:
        sys.exit(PARTIAL)
