"""The model repository on disk: <repository>/<name>/<version>/{encoder,decoder}.onnx + manifest.

Export writes a version into a hidden staging folder and renames it into place, so a server
never sees half a version. The service loads a version only after the manifest validates and
every listed file's sha256 matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from modelrepo.manifest import Manifest

MANIFEST = "manifest.json"
# Model names (folders of the repository): also the first part of the V2 names `m.encoder`, so no
# dot; lower case so that names are the same on every file system and in every URL.
MODEL_NAME_RULE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class ModelRepositoryError(Exception):
    """A model version that must not be served; the message names the file and the reason."""


@dataclass(frozen=True)
class ModelVersion:
    path: Path
    manifest: Manifest

    def file(self, name: str) -> Path:
        return self.path / name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a model name (None: it can)."""
    if MODEL_NAME_RULE.fullmatch(name):
        return None
    return (f"model name {name[:80]!r} breaks the naming rule {MODEL_NAME_RULE.pattern} "
            "(lower-case letters, digits, '_' and '-', at most 63 characters)")


def model_name_arg(value: str) -> str:
    """argparse `type=` for a model name: a usage error (exit 2, one line) when it breaks the
    rule, before any work."""
    import argparse

    problem = name_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def list_models(repository: str | Path) -> tuple[list[str], list[str]]:
    """-> (model folders whose names follow the rule, sorted; folders that break it). Hidden
    folders (staging, .git) are neither."""
    root = Path(repository)
    if not root.is_dir():
        return [], []
    good, bad = [], []
    for p in sorted(root.iterdir()):
        if p.is_dir() and not p.name.startswith("."):
            (good if name_problem(p.name) is None else bad).append(p.name)
    return good, bad


def list_versions(repository: str | Path, name: str) -> list[int]:
    """Integer-named version folders that hold a manifest, ascending (staging folders skipped)."""
    folder = Path(repository) / name
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name) for p in folder.iterdir()
        if p.name.isdigit() and (p / MANIFEST).is_file()
    )


def next_version(repository: str | Path, name: str) -> int:
    folder = Path(repository) / name
    taken = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(taken, default=0) + 1


def load_version(repository: str | Path, name: str, version: int) -> ModelVersion:
    """Validate the manifest and verify every file it lists; raise ModelRepositoryError if not."""
    path = Path(repository) / name / str(version)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ModelRepositoryError(f"{mpath}: manifest not found")
    try:
        manifest = Manifest.model_validate(json.loads(mpath.read_text()))
    except (ValueError, ValidationError) as exc:
        raise ModelRepositoryError(f"{mpath}: invalid manifest: {exc}") from exc
    if manifest.name != name or manifest.version != version:
        raise ModelRepositoryError(
            f"{mpath}: manifest says {manifest.name}/{manifest.version}, folder is {name}/{version}"
        )
    for entry in manifest.all_files():
        fpath = path / entry.path
        if not fpath.is_file():
            raise ModelRepositoryError(f"{fpath}: listed in the manifest but missing")
        actual = sha256_file(fpath)
        if actual != entry.sha256:
            raise ModelRepositoryError(
                f"{fpath}: sha256 {actual} does not match the manifest's {entry.sha256}"
            )
    return ModelVersion(path=path, manifest=manifest)


def staging_dir(repository: str | Path, name: str) -> Path:
    """A fresh hidden folder beside the versions, on the same file system (atomic rename)."""
    problem = name_problem(name)
    if problem is not None:
        raise ModelRepositoryError(f"cannot export: {problem}")
    folder = Path(repository) / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".staging-{uuid.uuid4().hex}"
    tmp.mkdir()
    return tmp


def publish(staging: Path, repository: str | Path, name: str, version: int) -> Path:
    """Rename a complete staging folder to its version number; refuse to overwrite a version."""
    target = Path(repository) / name / str(version)
    if target.exists():
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelRepositoryError(f"{target} already exists; versions are immutable")
    for f in staging.iterdir():  # make file contents durable before the rename makes them visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    os.rename(staging, target)
    return target
