"""Shared fixtures: one tiny trained + exported model per test session, and a real server helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.servers import Proc, free_port, start_service

ROOT = Path(__file__).resolve().parents[1]
# where `make data-mnist` links it (VAE_DATA_DIR, docs/TRAINING.md); tests that read it skip
# when it is absent
MNIST_DIR = Path(os.environ.get("VAE_DATA_DIR") or ROOT / "data").resolve() / "mnist"
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# `make test` runs two test processes at once (pytest-xdist, one per core): one intra-op
# thread each, inherited by the commands and servers they start, so that two torch thread
# pools never spin against each other on two cores (measured: a beta sweep 9.5 s alone,
# 72 s beside another test process when both used two threads). Tests that set threads keep
# theirs.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# The slowest modules first (seconds, measured serially on two cores), so that the two
# processes of `make test` finish together instead of one waiting out a long module at the
# end (pytest-xdist's --dist loadfile --no-loadscope-reorder keeps this order).
SLOW_MODULES = {"test_chaos": 224, "test_training": 158, "test_commands": 94,
                "test_startup": 92, "test_export": 88, "test_ui": 84, "test_deploy": 76,
                "test_fuzz": 75, "test_service_http": 68, "test_faults": 59, "test_hostile": 44,
                "test_sharp": 41, "test_byo": 37, "test_models": 34, "test_api_doc": 31,
                "test_configurations": 31, "test_jobs_ray": 30}
__all__ = ["CONFIGS", "MNIST_DIR", "ROOT", "Server", "free_port"]  # what test modules import
# Server configurations that change the layers around the front door; the contract and
# hostile-input tests run against each (one behaviour in every configuration).
CONFIGS = {
    "default": {},
    "cors": {"VAE_CORS_ORIGINS": "http://app.example"},
    "tracing": {"VAE_TRACING_SAMPLE_RATE": "1.0", "VAE_TRACING_EXPORTER": "in_memory",
                "VAE_BENTOML_METRICS": "true", "VAE_ACCESS_LOG": "bentoml"},
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """A small digits VAE trained for a few epochs, its checkpoint, and one exported version."""
    from export.onnx_export import export_checkpoint
    from training.train import TrainConfig, train

    work = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(epochs=3, latent_dim=4, hidden="64,32", out=str(work / "ckpt.pt"),
                      quiet=True, threads=1)
    payload = train(cfg)
    repo = work / "repository"
    path = export_checkpoint(cfg.out, repo, "digits")  # with fp16 and int8 variants
    return {"checkpoint": Path(cfg.out), "payload": payload, "repository": repo,
            "version_dir": path}


def Server(repository: Path, extra_env: dict[str, str] | None = None,
           bentoml: Path | None = None, cwd: Path = ROOT) -> Proc:
    """`bentoml serve` of the real service (the digits model of `repository`) on free loopback
    ports; `with Server(...) as srv:` waits until ready and always stops it. The log sits
    beside the repository."""
    env = {"VAE_MODEL_REPOSITORY": str(repository), "VAE_MODEL_NAME": "digits",
           **(extra_env or {})}
    return start_service(env, repository.parent, bentoml=bentoml, cwd=cwd)


def pytest_collection_modifyitems(config, items) -> None:
    """Slow modules first (SLOW_MODULES), the rest in their usual order."""
    items.sort(key=lambda item: -SLOW_MODULES.get(item.path.stem, 0))
