"""modelrepo/fetch.py, what the Kubernetes init container runs: a versioned archive fetched over
real HTTP, pinned by sha256 and verified file by file before anything is served; a wrong sha256,
a tampered graph or a path out of the folder leaves the folder empty and says why; no URL
copies the image's own repository; the same repository always packs to the same bytes."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from modelrepo.fetch import fill, pack
from modelrepo.repository import ModelRepositoryError
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def archive(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("archive") / "models.tar.gz"
    return out, pack(Path(trained["repository"]), out)


@pytest.fixture(scope="module")
def http_url(archive):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(archive[0].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/{archive[0].name}"
    server.shutdown()


def test_fetched_over_http_verified_and_served_as_it_was(archive, http_url, tmp_path, trained):
    into = tmp_path / "models"
    found = fill(into, http_url, archive[1], None)
    assert found == [f"digits/{v}" for v in sorted(int(p.name) for p in
                                                    (Path(trained["repository"]) / "digits")
                                                    .iterdir() if p.name.isdigit())]
    src = Path(trained["repository"])
    for f in src.rglob("*"):
        if f.is_file() and not any(p.startswith(".") for p in f.relative_to(src).parts):
            assert (into / f.relative_to(src)).read_bytes() == f.read_bytes()
    assert not list(into.glob(".fetch-*"))  # the staging folder is gone


def test_the_same_repository_packs_to_the_same_bytes(archive, trained, tmp_path):
    assert pack(Path(trained["repository"]), tmp_path / "again.tar.gz") == archive[1]


def test_a_wrong_sha256_is_refused(archive, http_url, tmp_path):
    with pytest.raises(ModelRepositoryError, match="is not the expected"):
        fill(tmp_path / "m", http_url, "0" * 64, None)
    assert [p for p in (tmp_path / "m").iterdir() if not p.name.startswith(".")] == []
    with pytest.raises(ModelRepositoryError, match="sha256 is required"):
        fill(tmp_path / "n", http_url, "", None)


def _tar(tmp_path: Path, members: dict[str, bytes]) -> tuple[Path, str]:
    out = tmp_path / "bad.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out, hashlib.sha256(out.read_bytes()).hexdigest()


def test_a_tampered_graph_is_refused_with_the_file_named(archive, tmp_path):
    with tarfile.open(archive[0]) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    graph = next(n for n in members if n.endswith("/decoder.onnx"))
    members[graph] = members[graph][:-1] + bytes([members[graph][-1] ^ 1])
    bad, digest = _tar(tmp_path, members)
    with pytest.raises(ModelRepositoryError, match="decoder.onnx: sha256"):
        fill(tmp_path / "m", str(bad), digest, None)
    assert not [p for p in (tmp_path / "m").iterdir() if not p.name.startswith(".")]


def test_paths_out_of_the_folder_are_refused(tmp_path):
    bad, digest = _tar(tmp_path, {"../escape.txt": b"x"})
    with pytest.raises(tarfile.TarError):
        fill(tmp_path / "m", str(bad), digest, None)
    assert not (tmp_path / "escape.txt").exists()


def test_no_url_copies_the_fallback_and_the_command_says_what_it_did(trained, tmp_path):
    r = subprocess.run([sys.executable, "-m", "modelrepo.fetch", "--into", str(tmp_path / "m"),
                        "--url", "", "--sha256", "", "--fallback", str(trained["repository"])],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "holds digits/" in r.stdout and (tmp_path / "m" / "digits").is_dir()
    r = subprocess.run([sys.executable, "-m", "modelrepo.fetch", "--into", str(tmp_path / "m")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "is not empty" in r.stderr  # never mixes two repositories
