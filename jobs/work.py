"""A job's unit of work, the same on every engine: one shard of the input (items [start, stop))
read, run through the model in batches, and written as one Parquet file, atomically. The model
is opened as the service opens it (service/runtime/engine.py: the manifest verified by
sha256, the graphs warmed and checked) and run by the same two calls, `encode_batch` and
`run_decoder`; the scores are modelrepo/scoring.py's, as /score's are.

A shard's output is `part-<shard>.parquet` in the output folder (renamed into place when
complete, so a shard is either wholly there or absent), its bad items `_errors/part-<shard>.jsonl`
(written first). Resuming skips the shards that are there, so every item is written exactly
once, whichever worker ran its shard and however often it was retried."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from jobs.inputs import Batch, InputSpec, Source
from modelrepo import scoring
from modelrepo.repository import list_versions

OPS = ("encode", "score", "reconstruct")
ENCODE_FIELDS = ("mu", "sigma", "logvar")


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs, as plain data (Ray ships it to each worker)."""
    op: str
    repository: str
    model: str
    version: int
    input: InputSpec
    output: str  # a folder of Parquet parts (pyarrow and Ray read it as one data set)
    shard_size: int = 4096
    batch_size: int = 256
    fields: tuple[str, ...] = ("mu", "sigma")  # encode: which of ENCODE_FIELDS
    samples: int = 0  # encode: z draws per item
    k: int = 16  # score: draws for nll_iwae (and neg_elbo when sampled)
    estimator: str = "sigma_points"  # score: neg_elbo's estimator, as /score's
    seed: int = 0
    threads: int = 0  # onnxruntime intra-op threads per session (0: every core)
    extra: dict = field(default_factory=dict)

    def identity(self) -> dict:
        """What must match for --resume to continue a job rather than mix two."""
        d = asdict(self)
        for k in ("threads", "extra", "output", "batch_size"):  # no bearing on the answers
            d.pop(k)
        return d


def latest_version(repository: str, model: str) -> int:
    versions = list_versions(repository, model)
    if not versions:
        raise ValueError(f"--model {model}: no versions in {repository} "
                         "(expected <repository>/<model>/<int>/manifest.json)")
    return max(versions)


def open_model(spec: JobSpec):  # -> ModelRuntime
    """The version as the service opens it: verified, warmed, on the CPU or GPU."""
    from service.config import Settings
    from service.runtime.engine import ModelSet, usable_cpus

    threads = spec.threads or int(usable_cpus())  # a container's CPU limit, not the host's
    settings = Settings(model_repository=str(Path(spec.repository).resolve()),
                        model_name=spec.model, models="", default_model="",
                        intra_op_threads=threads, inter_op_threads=1)
    return ModelSet.load_runtime(settings, spec.model, spec.version)


def _draws(seed: int, pos: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """eps for each item from (seed, its position): the same numbers whatever the batch,
    shard, engine or retry. -> [len(pos), *shape] float32."""
    return np.stack([np.random.default_rng([seed, int(p)]).standard_normal(shape)
                     .astype(np.float32) for p in pos]) if len(pos) else \
        np.empty((0, *shape), np.float32)


def compute(rt, spec: JobSpec, batch: Batch) -> dict[str, np.ndarray]:
    """One batch's result fields, named as the HTTP answers name them."""
    x, z_dim = batch.x, rt.latent_dim
    mu, logvar, sigma = rt.encode_batch(x)
    if spec.op == "encode":
        out = {"mu": mu, "sigma": sigma, "logvar": logvar}
        out = {f: out[f] for f in spec.fields}
        if spec.samples > 0:
            eps = _draws(spec.seed, batch.pos, (spec.samples, z_dim))
            out["z"] = mu[:, None, :] + sigma[:, None, :] * eps
        return out
    if spec.op == "reconstruct":
        return {"outputs": rt.run_decoder(mu)[0]}
    from service.operations.scores import reference_scores  # /score's, the same estimator

    def estimate(eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return scoring.score(x, mu, logvar, eps, rt.manifest.likelihood,
                             lambda z: dict(zip(rt.decoder_outputs, rt.run_decoder(z),
                                                strict=True)))

    neg_elbo, nll = estimate(_draws(spec.seed, batch.pos, (spec.k, z_dim)).transpose(1, 0, 2))
    if spec.estimator == "sigma_points":
        neg_elbo, _ = estimate(scoring.sigma_point_eps(z_dim, len(x)))
    out = {"neg_elbo": neg_elbo, "nll_iwae": nll}
    ref = reference_scores(rt, spec.estimator, spec.k)
    if ref is None and rt.reference is not None:
        ref = rt.reference["neg_elbo_sorted"]
    if ref is not None:
        out["percentile"] = scoring.percentile(neg_elbo, ref)
    return out


def part_path(output: str | Path, shard: int) -> Path:
    return Path(output) / f"part-{shard:05d}.parquet"


def errors_path(output: str | Path, shard: int) -> Path:
    return Path(output) / "_errors" / f"part-{shard:05d}.jsonl"


def shard_range(shard: int, spec: JobSpec, total: int) -> tuple[int, int]:
    return shard * spec.shard_size, min(total, (shard + 1) * spec.shard_size)


def process_shard(rt, source: Source, spec: JobSpec, shard: int,
                  write: Callable[..., object] | None = None) -> tuple[int, int]:
    """Read, compute and write one shard; -> (items written, items refused). `write` runs the
    shard's writing (default: here and now; the local engine hands it to a thread so that
    writing a part overlaps the next shard's model runs)."""
    start, stop = shard_range(shard, spec, len(source))
    ids: list[str] = []
    columns: dict[str, list[np.ndarray]] = {}
    errors: list[tuple[str, str]] = []
    for b0 in range(start, stop, spec.batch_size):
        batch = source.read(b0, min(stop, b0 + spec.batch_size))
        errors += batch.errors
        if len(batch.ids):
            ids += batch.ids
            for name, arr in compute(rt, spec, batch).items():
                columns.setdefault(name, []).append(arr)
    (write or (lambda f, *a: f(*a)))(_write_shard, spec, shard, ids, columns, errors, rt)
    return len(ids), len(errors)


def _write_shard(spec: JobSpec, shard: int, ids: list[str], columns: dict, errors: list,
                 rt) -> None:
    """The refused items first, then the part: a part that exists means a whole shard."""
    err = errors_path(spec.output, shard)
    err.parent.mkdir(parents=True, exist_ok=True)
    tmp = err.with_name("." + err.name)
    tmp.write_text("".join(json.dumps({"id": i, "reason": r}) + "\n" for i, r in errors))
    os.replace(tmp, err)
    _write_part(part_path(spec.output, shard), ids, columns, rt)


def _write_part(path: Path, ids: list[str], columns: dict[str, list[np.ndarray]], rt) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays, fields = [pa.array(ids, pa.string())], [pa.field("id", pa.string())]
    for name, parts in columns.items():
        arr = np.concatenate(parts)
        item_shape = list(arr.shape[1:])
        meta = {b"shape": json.dumps(item_shape).encode()}
        if not item_shape:  # one number per item
            arrays.append(pa.array(arr.astype(np.float64)))
            fields.append(pa.field(name, pa.float64(), metadata=meta))
            continue
        flat = pa.array(np.ascontiguousarray(arr, dtype=np.float32).reshape(-1))
        arrays.append(pa.FixedSizeListArray.from_arrays(flat, int(np.prod(item_shape))))
        fields.append(pa.field(name, arrays[-1].type, metadata=meta))
    meta = {b"model": rt.manifest.name.encode(), b"version": str(rt.manifest.version).encode()}
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))
    tmp = path.with_name("." + path.name)
    # no dictionary encoding: floats and unique ids gain nothing from it, and it was 3/4 of
    # the write's time (14 ms vs 3.5 ms for 4,096 items of two [32] columns)
    pq.write_table(table, tmp, use_dictionary=False)
    os.replace(tmp, path)


def warm_writer() -> None:
    """pyarrow imports pandas (~400 modules, 0.2 s) on its first Parquet write: done before the
    items' clock starts, as the model's sessions are."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": pa.array(["0"])}), pa.BufferOutputStream())


def read_results(output: str | Path) -> dict[str, np.ndarray]:
    """A job's output as arrays, each item in its shape (mu [N, Z], z [N, S, Z], outputs
    [N, C, H, W], ...), rows in input order; `id` as strings."""
    import pyarrow.parquet as pq

    parts = sorted(Path(output).glob("part-*.parquet"))
    if not parts:
        return {}
    tables = [pq.read_table(p) for p in parts]
    out: dict[str, np.ndarray] = {"id": np.array(sum((t.column("id").to_pylist()
                                                      for t in tables), []), dtype=object)}
    for f in tables[0].schema:
        if f.name == "id":
            continue
        shape = json.loads(f.metadata[b"shape"])
        col = [t.column(f.name).combine_chunks() for t in tables]
        if shape:
            flat = np.concatenate([c.flatten().to_numpy(zero_copy_only=False) for c in col])
            out[f.name] = flat.reshape(-1, *shape)
        else:
            out[f.name] = np.concatenate([c.to_numpy(zero_copy_only=False) for c in col])
    return out
