"""onnxruntime sessions for the verified versions of one model: the service's only compute.

No torch here: the serving image carries onnxruntime (CPU or GPU build) and numpy only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from modelrepo.manifest import Manifest
from modelrepo.repository import ModelRepositoryError, ModelVersion, list_versions, load_version
from service.config import Settings
from service.errors import VersionNotFound
from service.runtime import latent
from service.runtime.batching import RowBatcher, settle

log = logging.getLogger("vae.engine")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
OPT_LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def select_providers(requested: str, available: list[str]) -> list[str]:
    """auto: CUDA when this onnxruntime build sees it (onnxruntime-gpu), else CPU."""
    if requested == "cpu":
        return [CPU]
    if requested == "cuda":
        if CUDA not in available:
            raise ModelRepositoryError(
                f"VAE_PROVIDER=cuda but onnxruntime offers only {available} "
                "(install the gpu extra, onnxruntime-gpu, on a machine with CUDA)")
        return [CUDA, CPU]
    if requested == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise ValueError(f"unknown provider {requested!r} (auto, cpu or cuda)")


def select_versions(spec: str, available: list[int]) -> list[int]:
    if not available:
        return []
    if spec == "latest":
        return [max(available)]
    if spec == "all":
        return list(available)
    wanted = sorted({int(v) for v in spec.split(",") if v.strip()})
    missing = [v for v in wanted if v not in available]
    if missing:
        raise ModelRepositoryError(f"versions {missing} requested but not in the repository "
                                   f"(available: {available})")
    return wanted


def session_options(settings: Settings) -> ort.SessionOptions:
    """onnxruntime's options for every session of a worker, from the VAE_* settings."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.intra_op_threads
    opts.inter_op_num_threads = settings.inter_op_threads
    opts.add_session_config_entry("session.intra_op.allow_spinning",
                                  "1" if settings.intra_op_spinning else "0")
    opts.graph_optimization_level = OPT_LEVELS[settings.graph_optimization]
    opts.enable_cpu_mem_arena = settings.cpu_mem_arena
    return opts


class ModelRuntime:
    """One verified version: its manifest and an encoder and decoder session."""

    def __init__(self, mv: ModelVersion, providers: list[str], settings: Settings):
        self.manifest: Manifest = mv.manifest
        self.variant = settings.variant
        opts = session_options(settings)
        t0 = time.perf_counter()
        try:
            pair = self.manifest.graph_pair(settings.variant)
        except KeyError as exc:
            raise ModelRepositoryError(f"{mv.path}: VAE_VARIANT: {exc.args[0]}") from None
        try:
            self.encoder = ort.InferenceSession(str(mv.file(pair["encoder"].path)), opts,
                                                providers=providers)
            self.decoder = ort.InferenceSession(str(mv.file(pair["decoder"].path)), opts,
                                                providers=providers)
        except Exception as exc:  # onnxruntime raises its own (non-exported) exception types
            raise ModelRepositoryError(f"{mv.path}: onnxruntime cannot load a graph: {exc}") \
                from exc
        self.decoder_outputs = [o.name for o in self.decoder.get_outputs()]
        self.settings = settings
        self._batchers: dict[str, RowBatcher] = {}
        self.reference = self._load_reference(mv)
        # /score's calibration: the reference items' neg_elbo per k (operations/calibration.py)
        self.reference_scores: dict[int, np.ndarray] = {}
        self.provider = self.encoder.get_providers()[0]
        if settings.provider == "cuda" and self.provider != CUDA:
            # onnxruntime-gpu lists CUDA whenever it was built with it, then falls back to the
            # CPU (logging why) when no GPU or driver answers: `cuda` means a GPU or nothing
            raise ModelRepositoryError(
                f"{mv.path}: VAE_PROVIDER=cuda but onnxruntime could not create its CUDA "
                "provider (no GPU or NVIDIA driver here; onnxruntime's log above says why); "
                "VAE_PROVIDER=auto falls back to the CPU")
        self.warmup()
        self.load_seconds = time.perf_counter() - t0

    def _load_reference(self, mv: ModelVersion) -> dict[str, np.ndarray] | None:
        """The latent-map reference set and held-out -ELBO values (verified by sha256 already)."""
        if self.manifest.reference is None:
            return None
        try:
            with np.load(mv.file(self.manifest.reference.file), allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError) as exc:
            raise ModelRepositoryError(f"{mv.file(self.manifest.reference.file)}: {exc}") from exc

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def shape(self) -> list[int]:
        return list(self.manifest.input.shape)

    @property
    def latent_dim(self) -> int:
        return self.manifest.latent_dim

    # The only two places that call onnxruntime: the batchers run these, warm-up too.
    def run_encoder(self, x: np.ndarray) -> list[np.ndarray]:
        return self.encoder.run(["mu", "logvar"], {"x": x})

    def encode_batch(self, x: np.ndarray) -> list[np.ndarray]:
        """What the encoder's batcher runs: mu, logvar and sigma, the last computed once per
        batch rather than once per request (numpy's exp gives every row the same bits either
        way)."""
        mu, logvar = self.run_encoder(x)
        return [mu, logvar, latent.sigma_of(logvar)]

    def run_decoder(self, z: np.ndarray) -> list[np.ndarray]:
        """Every decoder output: x, plus logits or x_logvar for /score's likelihood."""
        return self.decoder.run(self.decoder_outputs, {"z": z})

    def batcher(self, graph: str) -> RowBatcher:
        """Created on first use, inside the serving event loop."""
        if graph not in self._batchers:
            st = self.settings
            run = self.encode_batch if graph == "encoder" else self.run_decoder
            self._batchers[graph] = RowBatcher(
                graph, run, st.batch_max_rows if st.batching else 1,
                st.batch_max_wait_ms if st.batching else 0.0, st.max_queue_rows,
                inline_limit_ms(st.inline_run_ms, usable_cpus()), model=self.name)
        return self._batchers[graph]

    def submit_threadsafe(self, graph: str, x: np.ndarray,
                          loop: asyncio.AbstractEventLoop) -> Future:
        """From another thread (the gRPC door): queue x for `graph` in the serving loop's
        batcher; the Future gets its rows' outputs (or QueueFull)."""
        result: Future = Future()

        def enqueue() -> None:
            try:
                self.batcher(graph).enqueue(x, result)
            except Exception as exc:  # QueueFull, or a retired version's closed batcher
                settle(result, exc=exc)

        loop.call_soon_threadsafe(enqueue)
        return result

    async def aencode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> mu, logvar, sigma of q(z|x) for the rows of x."""
        mu, logvar, sigma = await self.batcher("encoder").submit(x)
        return mu, logvar, sigma

    async def adecode_all(self, z: np.ndarray) -> dict[str, np.ndarray]:
        outs = await self.batcher("decoder").submit(np.ascontiguousarray(z, dtype=np.float32))
        return dict(zip(self.decoder_outputs, outs, strict=True))

    async def adecode(self, z: np.ndarray) -> np.ndarray:
        return (await self.adecode_all(z))["x"]

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()

    def warmup(self) -> None:
        """One run of each graph at batch 1 and 8, checking the output shapes it promises."""
        for n in (1, 8):
            mu, logvar = self.run_encoder(np.zeros((n, *self.shape), dtype=np.float32))
            x = self.run_decoder(mu)[0]
            if mu.shape != (n, self.latent_dim) or logvar.shape != mu.shape or \
                    list(x.shape) != [n, *self.shape]:
                raise ModelRepositoryError(
                    f"{self.manifest.name}/{self.manifest.version}: graph shapes "
                    f"{mu.shape}, {x.shape} disagree with the manifest")


def inline_limit_ms(setting_ms: float, cpus: float) -> float:
    """Runs expected to be shorter than this go inline in the event loop. With one usable core
    the batcher's thread could never overlap the loop, so only the stall others would feel
    matters: up to 50 ms (docs/BENCHMARKS.md, P4). 0 keeps the thread."""
    if setting_ms == 0 or cpus > 1:
        return setting_ms
    return max(setting_ms, 50.0)


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> float:
    """Cores this process may use: its CPU affinity (taskset, a Kubernetes cpuset), capped by
    a CPU quota when one is set (a container's CPU limit: `docker run --cpus`, Kubernetes'
    limits), from cgroup v2's cpu.max or cgroup v1's cpu.cfs_quota_us / cpu.cfs_period_us."""
    cpus = float(len(os.sched_getaffinity(0)))
    quota = _cpu_quota(cgroup)
    return min(cpus, max(1.0, quota)) if quota is not None else cpus


def _cpu_quota(cgroup: Path) -> float | None:
    try:  # v2: "max 100000" or "150000 100000"
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else float(quota) / float(period)
    except (OSError, ValueError):
        pass
    for v1 in (cgroup / "cpu", cgroup / "cpu,cpuacct", cgroup):  # v1: -1 means no quota
        try:
            quota_us = float((v1 / "cpu.cfs_quota_us").read_text())
            period_us = float((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 else quota_us / period_us
    return None


@dataclass
class ModelSet:
    """The loaded versions of one model name; requests pick one (default: the highest).

    `runtimes` is replaced, never mutated, when versions come and go
    (service/runtime/watcher.py), so a request that picked a version keeps it whatever happens
    meanwhile."""

    name: str
    runtimes: dict[int, ModelRuntime]
    failed: dict[int, str] = field(default_factory=dict)  # version -> why it is not served
    loading: set[int] = field(default_factory=set)

    @classmethod
    def load(cls, settings: Settings, name: str) -> ModelSet:
        """The versions of model `name` that VAE_MODEL_VERSIONS selects, each verified and
        warmed; ModelRepositoryError if the model must not be served."""
        available = list_versions(settings.model_repository, name)
        if not available:
            raise ModelRepositoryError(
                f"no versions of model {name!r} in repository "
                f"{settings.model_repository!r} (expected <repository>/<name>/<int>/manifest.json)")
        runtimes = {v: cls.load_runtime(settings, name, v)
                    for v in select_versions(settings.model_versions, available)}
        return cls(name, runtimes)

    @staticmethod
    def load_runtime(settings: Settings, name: str, version: int) -> ModelRuntime:
        """Verify (sha256 of every file), open and warm one version; raises
        ModelRepositoryError for anything that must not be served."""
        providers = select_providers(settings.provider, ort.get_available_providers())
        mv = load_version(settings.model_repository, name, version)
        rt = ModelRuntime(mv, providers, settings)
        log.info("loaded %s/%d on %s in %.2f s", name, version, rt.provider, rt.load_seconds)
        return rt

    @property
    def versions(self) -> list[int]:
        return sorted(self.runtimes)

    def get(self, version: int | None) -> ModelRuntime:
        runtimes = self.runtimes  # one snapshot: the dict may be replaced meanwhile
        if version is None:
            return runtimes[max(runtimes)]
        if version not in runtimes:
            why = f" ({self.failed[version]})" if version in self.failed else ""
            raise VersionNotFound(f"version: {version} is not loaded for model {self.name!r}"
                                  f"{why} (loaded: {sorted(runtimes)})")
        return runtimes[version]

    def state(self, version: int) -> tuple[str, str]:
        """KServe repository states: READY, LOADING, UNAVAILABLE (with the reason)."""
        if version in self.runtimes:
            return "READY", ""
        if version in self.loading:
            return "LOADING", ""
        if version in self.failed:
            return "UNAVAILABLE", self.failed[version]
        return "UNAVAILABLE", "not loaded (VAE_MODEL_VERSIONS selects which versions are served)"
