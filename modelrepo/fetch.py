"""Fill a model repository folder before the server starts (a Kubernetes init container, or any
host): from a versioned archive, or from the image's own repository when none is named.

    python -m modelrepo.fetch --into /srv/models [--url URL --sha256 HEX] [--fallback /models]
    python -m modelrepo.fetch --pack models --out models.tar.gz      # make model-archive

The archive (.tar.gz or .tar) holds `<name>/<version>/` folders, as `make model-archive`
writes them. It is refused unless its sha256 is the one given: every replica, on every node,
then serves the same bytes, which a mutable tag or a shared writable volume cannot promise.
After extraction every version is verified as the service verifies it (manifest schema,
sha256 of each file): a bad archive stops here, with the reason, and the pod never serves it.
Without --url the fallback folder (the image's embedded repository) is copied instead.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from modelrepo.repository import ModelRepositoryError, list_models, list_versions, load_version


def pack(repository: Path, out: Path) -> str:
    """Every verified version of `repository` as a .tar.gz whose bytes depend only on the files
    (sorted, no owners, no times): the same repository always gives the same sha256."""
    verify(repository)

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if any(part.startswith(".") for part in Path(info.name).parts[1:]):
            return None  # staging folders and the like
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(repository.rglob("*")):
            rel = path.relative_to(repository)
            if path.is_file() and not any(p.startswith(".") for p in rel.parts):
                tar.add(path, arcname=str(rel), recursive=False, filter=clean)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def download(url: str, into: Path) -> str:
    """url (http(s):// or file://, or a path) -> a file in `into`; its sha256."""
    target, digest = into / "archive", hashlib.sha256()
    source = Path(url) if "://" not in url else None
    with (open(source, "rb") if source else urllib.request.urlopen(url, timeout=60)) as r, \
            open(target, "wb") as f:
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def verify(repository: Path) -> list[str]:
    """Every version of every model, loaded and checked; -> ["name/version", ...]."""
    names, problems = list_models(repository)
    if problems:
        raise ModelRepositoryError(f"model folder names break the naming rule: {problems}")
    if not names:
        raise ModelRepositoryError(f"{repository}: no <name>/<version>/manifest.json folders")
    found = []
    for name in names:
        for version in list_versions(repository, name):
            load_version(repository, name, version)
            found.append(f"{name}/{version}")
    return found


def fill(into: Path, url: str, sha256: str, fallback: Path | None) -> list[str]:
    into.mkdir(parents=True, exist_ok=True)
    if any(into.iterdir()):
        raise ModelRepositoryError(f"{into} is not empty: fetch fills an empty folder")
    # staged inside the folder itself (hidden: no model), the one place an init container
    # with a read-only root filesystem can write
    with tempfile.TemporaryDirectory(dir=into, prefix=".fetch-") as tmp:
        stage = Path(tmp) / "repository"
        if url:
            if len(sha256) != 64:
                raise ModelRepositoryError("--sha256: the archive's 64-digit sha256 is "
                                           "required with --url")
            got = download(url, Path(tmp))
            if got != sha256.lower():
                raise ModelRepositoryError(f"{url}: sha256 {got} is not the expected {sha256}")
            with tarfile.open(Path(tmp) / "archive") as tar:
                tar.extractall(stage, filter="data")  # no links out, no devices, no ../
        elif fallback is not None and fallback.is_dir():
            shutil.copytree(fallback, stage)
        else:
            raise ModelRepositoryError("no --url, and no fallback repository to copy")
        found = verify(stage)
        for part in stage.iterdir():
            part.rename(into / part.name)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m modelrepo.fetch",
                                description=__doc__.splitlines()[0])
    p.add_argument("--into", help="the (empty) repository folder to fill")
    p.add_argument("--pack", help="instead: write this repository as an archive (--out)")
    p.add_argument("--out", help="the archive --pack writes")
    p.add_argument("--url", default="", help="the archive (http(s)://, file:// or a path); "
                   "empty: copy --fallback")
    p.add_argument("--sha256", default="", help="the archive's sha256 (required with --url)")
    p.add_argument("--fallback", default="", help="a repository to copy when no --url")
    a = p.parse_args(argv)
    if a.pack:
        if not a.out:
            p.error("--pack needs --out")
        try:
            digest = pack(Path(a.pack), Path(a.out))
        except (ModelRepositoryError, OSError) as exc:
            print(f"fetch: cannot pack {a.pack}: {exc}", file=sys.stderr)
            return 1
        print(f"{a.out}\nsha256 {digest}")
        return 0
    if not a.into:
        p.error("--into (or --pack) is required")
    try:
        found = fill(Path(a.into), a.url.strip(), a.sha256.strip(),
                     Path(a.fallback) if a.fallback else None)
    except (ModelRepositoryError, OSError, tarfile.TarError) as exc:
        print(f"fetch: refusing the model repository: {exc}", file=sys.stderr)
        return 1
    print(f"fetch: {a.into} holds {', '.join(found)} (from {a.url or a.fallback})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
