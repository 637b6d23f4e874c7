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
