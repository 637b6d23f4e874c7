"""The served models: a registry of model names above each model's version set, as in Triton's
model repository. Each model keeps its own versions (ModelSet), watcher state, batchers (one per
model, version and graph: service/runtime/engine.py) and reference set; nothing here is keyed by
"the" model.

VAE_MODELS names the models (or `*`: every folder of the repository, including folders that
appear or disappear while the service runs); unset, VAE_MODEL_NAME alone. The default model
(VAE_DEFAULT_MODEL, else the first name, else the alphabetically first served) answers requests
that name none. With explicit names every one must load at start (a bad one stops the start);
with `*` a broken model is refused and logged (state UNAVAILABLE, tried again once its files
change), a folder whose name breaks the rule is logged and skipped, and neither touches the
others. `models` is replaced, never mutated: a request that resolved its model keeps it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelrepo.repository import ModelRepositoryError, list_models, list_versions
from service.config import Settings
from service.errors import ModelNotFound
from service.metrics import forget_model
from service.runtime.engine import ModelRuntime, ModelSet
from service.runtime.watcher import RepositoryWatcher, version_signature

log = logging.getLogger("vae.models")
Hook = Callable[[ModelRuntime], None]


def _model_signature(repository: str, name: str) -> tuple:
    """What changes when any version folder of a model changes."""
    folder = Path(repository) / name
    return tuple((v, version_signature(folder / str(v))) for v in list_versions(repository, name))


@dataclass
class ModelRegistry:
    settings: Settings
    models: dict[str, ModelSet]
    on_loaded: Hook = lambda rt: None
    on_retired: Hook = lambda rt: None
    refused: dict[str, str] = field(default_factory=dict)  # name -> why it is not served
    watchers: dict[str, RepositoryWatcher] = field(default_factory=dict)
    _refused_sig: dict[str, tuple] = field(default_factory=dict)
    _skipped: set[str] = field(default_factory=set)  # bad folder names, logged once
    default_name: str | None = None  # (set from the settings and what is served)
    _task: asyncio.Task | None = None
    _lock: asyncio.Lock | None = None

    def __post_init__(self) -> None:
        self.wanted = self.settings.model_names  # None: every folder (`*`)
        for ms in self.models.values():
            self._watch(ms)
        self.default_name = self._choose_default()

    @classmethod
    def load(cls, settings: Settings, on_loaded: Hook = lambda rt: None,
             on_retired: Hook = lambda rt: None) -> ModelRegistry:
        """Load, verify and warm the configured models. Named models that cannot be served
        raise ModelRepositoryError (the start is refused); with `*` they are logged and
        refused one by one."""
        names = settings.model_names
        if names is not None:
            models = {n: ModelSet.load(settings, n) for n in names}
            reg = cls(settings, models, on_loaded, on_retired)
        else:
            if not Path(settings.model_repository).is_dir():
                raise ModelRepositoryError(f"VAE_MODEL_REPOSITORY: {settings.model_repository} "
                                           "is not a folder")
            reg = cls(settings, {}, on_loaded, on_retired)
            found, bad = list_models(settings.model_repository)
            reg._skip(bad)
            for name in found:
                ms = reg._verify(name)
                if ms is not None:
                    reg._route(ms)
        for ms in reg.models.values():
            for rt in ms.runtimes.values():
                on_loaded(rt)
        return reg

    # -- what requests see ---------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return sorted(self.models)

    def _choose_default(self) -> str | None:
        st = self.settings
        if st.default_model:
            return st.default_model
        if self.wanted is not None:
            return self.wanted[0]
        return min(self.models, default=None)

    def get(self, name: str | None) -> ModelSet:
        """The served model `name` (None: the default); ModelNotFound naming the served ones."""
        models = self.models  # one snapshot
        found = models.get(self.default_name if name is None else name)
        if found is None:
            served = ", ".join(sorted(models)) or "none yet"
            if name is None:
                raise ModelNotFound(f"model: the default model {self.default_name!r} is not served "
                                    f"now; name one (served: {served})")
            raise ModelNotFound(f"model: {name[:80]!r} is not served (served: {served})")
        return found

    def not_ready_because(self) -> str | None:
        if self.wanted is None:
            return None if any(m.runtimes for m in self.models.values()) else \
                "no model is loaded yet (VAE_MODELS=*)"
        missing = [n for n in self.wanted if not self.models.get(n) or
                   not self.models[n].runtimes]
        return f"models not loaded yet: {', '.join(missing)}" if missing else None

    def state(self, name: str) -> tuple[str, str]:
        if name in self.models:
            return "READY", ""
        if name in self.refused:
            return "UNAVAILABLE", self.refused[name]
        return "UNAVAILABLE", "not served (VAE_MODELS selects which models are served)"

    # -- models coming and going ---------------------------------------------------------
    def _watch(self, ms: ModelSet) -> None:
        self.watchers[ms.name] = RepositoryWatcher(ms, self.settings, self.on_loaded,
                                                   self.on_retired)

    def _skip(self, bad: list[str]) -> None:
        for name in bad:
            if name not in self._skipped:
                self._skipped.add(name)
                log.error("skipping folder %s/%s: not a model name (the naming rule is "
                          "[a-z0-9][a-z0-9_-]{0,62})", self.settings.model_repository, name)

    def _verify(self, name: str) -> ModelSet | None:
        """Load, verify and warm model `name` (blocking: a thread's work while serving); None,
        with the reason recorded and logged, if it must not be served. A model refused before
        is tried again only once its files changed."""
        sig = _model_signature(self.settings.model_repository, name)
        if name in self._refused_sig and self._refused_sig[name] == sig:
            return None
        try:
            ms = ModelSet.load(self.settings, name)
        except ModelRepositoryError as exc:
            self.refused[name], self._refused_sig[name] = str(exc), sig
            log.error("model %s is not served: %s", name, exc)
            return None
        self.refused.pop(name, None)
        self._refused_sig.pop(name, None)
        return ms

    def _route(self, ms: ModelSet) -> None:
        """A verified, warm model becomes routable (and the default may change)."""
        self._watch(ms)
        self.models = {**self.models, ms.name: ms}
        self.default_name = self._choose_default()

    async def _add(self, name: str) -> None:
        """A model folder that appeared: verified and warmed off the loop, then served."""
        ms = await asyncio.to_thread(self._verify, name)
        if ms is not None:
            self._route(ms)
            for rt in ms.runtimes.values():
                self.on_loaded(rt)
            log.info("now serving model %s (versions %s)", name, ms.versions)

    def _remove(self, name: str) -> None:
        """A model whose folder is gone: 404 from now on; calls holding it finish first."""
        self.models = {n: m for n, m in self.models.items() if n != name}
        self.default_name = self._choose_default()
        watcher = self.watchers.pop(name, None)
        if watcher is not None:
            watcher.retire_all()
        self.refused.pop(name, None)
        self._refused_sig.pop(name, None)
        forget_model(name)
        log.info("retired model %s: its folder is gone", name)

    async def refresh(self, only: str | None = None) -> None:
        """One look at the repository: new versions of served models; with `*`, models that
        appeared or disappeared. `only`: that model alone (a V2 load call)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            repo = Path(self.settings.model_repository)
            if not await asyncio.to_thread(repo.is_dir):  # a volume gone for a moment: keep
                log.error("repository %s is not there; serving what is loaded", repo)
                return
            if self.wanted is None:
                found, bad = await asyncio.to_thread(list_models, self.settings.model_repository)
                self._skip(bad)
                for name in found:
                    if name not in self.models and only in (None, name):
                        await self._add(name)
                for name in [n for n in self.models if n not in found]:
                    self._remove(name)
                for name in [n for n in self.refused if n not in found]:
                    self.refused.pop(name)
                    self._refused_sig.pop(name, None)
            for name, watcher in list(self.watchers.items()):
                if only not in (None, name) or name not in self.models:
                    continue
                if self.wanted is None and not await watcher.available():
                    self._remove(name)  # every version folder went
                    continue
                await watcher.refresh()

    def start(self) -> None:
        if self.settings.repository_poll_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.repository_poll_s)
            try:
                await self.refresh()
            except Exception:  # a bad poll (disk hiccup) must not end polling
                log.exception("repository poll failed")
