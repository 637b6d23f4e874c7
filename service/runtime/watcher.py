"""Live model versions of one served model: a version that appears in the repository is
verified, warmed and then served, without a restart; `latest` moves only once the new version
is ready.

Each worker has one watcher per served model (it owns its onnxruntime sessions), refreshed by
the registry's poll every VAE_REPOSITORY_POLL_S seconds (service/runtime/registry.py) and on
POST /v2/repository/models/{m}/load (which reaches the worker that received it; the others
follow at their next poll). A version that fails verification is reported
(`/v2/repository/index`, state UNAVAILABLE with the reason) and not served; it is tried again
only once its files change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from modelrepo.repository import ModelRepositoryError, list_versions
from service.config import Settings
from service.runtime.engine import ModelRuntime, ModelSet

log = logging.getLogger("vae.live")


def version_signature(path: Path) -> tuple:
    """What changes when a version's files are replaced or finished copying."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                            for p in path.iterdir()))
    except OSError:
        return ()


class RepositoryWatcher:
    def __init__(self, models: ModelSet, settings: Settings,
                 on_loaded: Callable[[ModelRuntime], None] = lambda rt: None,
                 on_retired: Callable[[ModelRuntime], None] = lambda rt: None):
        self.models = models
        self.settings = settings
        self.on_loaded = on_loaded
        self.on_retired = on_retired
        self._lock = asyncio.Lock()
        self._failed_sig: dict[int, tuple] = {}

    @property
    def name(self) -> str:
        return self.models.name

    def _dir(self, version: int) -> Path:
        return Path(self.settings.model_repository) / self.name / str(version)

    async def available(self) -> list[int]:
        return await asyncio.to_thread(list_versions, self.settings.model_repository, self.name)

    def candidates(self, available: list[int]) -> list[int]:
        """Versions to try now, best first, by the VAE_MODEL_VERSIONS policy."""
        loaded = self.models.runtimes
        retry = [v for v in available
                 if v not in loaded and self._failed_sig.get(v) != version_signature(self._dir(v))]
        spec = self.settings.model_versions
        if spec == "latest":  # only what would become the new latest, newest first
            return sorted((v for v in retry if v > max(loaded, default=0)), reverse=True)
        if spec == "all":
            return sorted(retry)
        return []  # an explicit list was loaded (or refused) at start

    async def refresh(self) -> list[int]:
        """Load what the policy wants and the repository now holds; -> versions loaded."""
        async with self._lock:
            st = self.settings
            available = await self.available()
            loaded: list[int] = []
            for v in self.candidates(available):
                if await self._load(v):
                    loaded.append(v)
                    if st.model_versions == "latest":
                        break  # the newest good version is enough
            gone = [v for v in self.models.runtimes if v not in available]
            if st.model_versions == "latest" and loaded:
                gone = [v for v in self.models.runtimes if v != max(loaded)]
            self._retire([v for v in gone if len(self.models.runtimes) > 1])
            return loaded

    async def _load(self, version: int) -> bool:
        sig = version_signature(self._dir(version))
        self.models.loading.add(version)
        try:
            rt = await asyncio.to_thread(ModelSet.load_runtime, self.settings, self.name, version)
        except ModelRepositoryError as exc:
            self.models.failed[version] = str(exc)
            self._failed_sig[version] = sig
            log.error("%s version %d is not served: %s", self.name, version, exc)
            return False
        finally:
            self.models.loading.discard(version)
        self.models.failed.pop(version, None)
        self._failed_sig.pop(version, None)
        self.models.runtimes = {**self.models.runtimes, version: rt}  # ready: now routable
        self.on_loaded(rt)
        log.info("now serving %s/%d (latest %d)", self.name, version,
                 max(self.models.runtimes))
        return True

    def _retire(self, versions: list[int]) -> None:
        if not versions:
            return
        old = {v: self.models.runtimes[v] for v in versions}
        self.models.runtimes = {v: rt for v, rt in self.models.runtimes.items()
                                if v not in old}
        loop = asyncio.get_running_loop()
        for v, rt in old.items():
            log.info("retired %s/%d", self.name, v)
            self.on_retired(rt)
            # requests that already hold this runtime finish first (bounded by the timeout)
            loop.call_later(self.settings.timeout_s + 1, rt.close)

    def retire_all(self) -> None:
        """The model itself leaves (its folder is gone): every version, the last one too."""
        self._retire(list(self.models.runtimes))
