"""Refuse to start under a memory limit the service cannot start in, with a message, instead of
being OOM-killed without a word (and, once started, BentoML restarting a worker the kernel
keeps killing). The limit is the container's (cgroup v2 `memory.max`, v1
`memory.limit_in_bytes`); the floor is a lower bound from measured resident sizes
(docs/BENCHMARKS.md, P5: the arbiter ~130 MB, each worker ~150 MB with a small model, plus
about twice the bytes of each served model's graphs and reference set): below it the service
cannot start, so refusing loses nothing.
"""

from __future__ import annotations

from pathlib import Path

from modelrepo.repository import list_models, list_versions

ARBITER_MB = 120.0  # lower bounds: measured 132 and 150 MB (digits), 155 and 172 (MNIST)
WORKER_MB = 135.0
PER_MODEL_BYTE = 2.0  # sessions and the reference set: about twice their files
NO_LIMIT = 1 << 60  # cgroup v1 says "no limit" with a number near 2^63


def memory_limit_mb(cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The container's memory limit in MB, or None when there is none."""
    try:
        text = (cgroup / "memory.max").read_text().strip()
        return None if text == "max" else int(text) / 2**20
    except (OSError, ValueError):
        pass
    for v1 in (cgroup / "memory", cgroup):
        try:
            value = int((v1 / "memory.limit_in_bytes").read_text())
        except (OSError, ValueError):
            continue
        return None if value >= NO_LIMIT else value / 2**20
    return None


def model_bytes(repository: Path, names: list[str]) -> dict[str, int]:
    """Bytes of the newest version's graphs and reference set, per served model name."""
    out = {}
    for name in names:
        versions = list_versions(repository, name)
        if versions:
            newest = repository / name / str(versions[-1])
            out[name] = sum(f.stat().st_size for f in newest.iterdir()
                            if f.name in ("encoder.onnx", "decoder.onnx", "reference.npz"))
    return out


def floor_mb(workers: int, sizes: dict[str, int]) -> float:
    return ARBITER_MB + workers * (WORKER_MB + PER_MODEL_BYTE * sum(sizes.values()) / 2**20)


def refusal(settings, cgroup: Path = Path("/sys/fs/cgroup")) -> str | None:
    """Why the service cannot start under this memory limit, or None."""
    limit = memory_limit_mb(cgroup)
    if limit is None:
        return None
    repository = Path(settings.model_repository)
    names = settings.model_names  # the service's own reading of VAE_MODELS
    if names is None:  # `*`: every model folder, as the registry lists them
        names = list_models(repository)[0]
    sizes = model_bytes(repository, names)
    need = floor_mb(settings.workers, sizes)
    if limit >= need:
        return None
    models = ", ".join(f"{n} {b / 2**20:.1f} MB" for n, b in sizes.items()) or "none found"
    return (f"the memory limit is {limit:.0f} MB, below the {need:.0f} MB this configuration "
            f"needs at least to start (VAE_WORKERS={settings.workers}, models: {models}); "
            "raise the container's memory limit (docker run --memory, a Kubernetes limit) or "
            "serve fewer workers or models")
