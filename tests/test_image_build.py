"""deploy/image/build.sh's care for the storage, with real buildah on tiny scratch images: a
rebuild removes exactly the images its own tags pointed to before and no longer do (the vfs
driver copies every layer in full, and superseded chains once filled CI's disk), and a build
stops before starting when the storage is short of space. Runs in `make test-image`."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from conftest import ROOT
from support import image

pytestmark = [
    pytest.mark.skipif(not os.environ.get("VAE_IMAGE_TEST"),
                       reason="runs in `make test-image` (buildah and its storage)"),
    pytest.mark.skipif(not shutil.which("buildah"), reason="buildah is not installed"),
]


def commit(tag: str | None, label: str) -> str:
    """A new empty image with its own ID (the label makes it differ), tagged or untagged."""
    c = image.buildah("from", "scratch").stdout.strip()
    try:
        image.buildah("config", "--label", f"test={label}", c)
        return image.buildah("commit", "-q", c, *([tag] if tag else [])).stdout.strip()
    finally:
        image.buildah("rm", c)


def superseded(script: str) -> subprocess.CompletedProcess:
    script = f"set -euo pipefail; . deploy/image/superseded.sh; {script}"
    return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          check=True)


def test_a_rebuild_removes_only_what_its_own_tags_superseded():
    run = uuid.uuid4().hex[:8]
    ours, shared = f"localhost/vae-test-{run}:latest", f"localhost/vae-test-{run}:stage"
    elsewhere = f"localhost/vae-test-{run}-elsewhere:1"
    made = []
    try:
        old_ours, old_shared = commit(ours, "1"), commit(shared, "2")
        image.buildah("tag", old_shared, elsewhere)  # still wanted by someone else
        stray = commit(None, "stray")  # another project's untagged image
        made += [old_ours, old_shared, stray]
        absent = f"localhost/vae-test-{run}:absent"
        old = superseded(f"image_ids {ours} {shared} {absent}").stdout.split()
        assert sorted(old) == sorted([old_ours, old_shared])
        made += [commit(ours, "3"), commit(shared, "4")]  # the rebuild moves both tags
        out = superseded(f"drop_superseded {' '.join(old)}").stdout
        assert not image.available(old_ours) and f"removed superseded image {old_ours[:12]}" in out
        assert image.available(old_shared) and image.available(stray)  # tagged elsewhere / not ours
        assert image.available(ours) and image.available(shared)
        again = superseded(f"drop_superseded {' '.join(old)}").stdout  # nothing left to do
        assert again == ""
    finally:
        for name in [elsewhere, ours, shared, *made]:
            image.buildah("rmi", "-f", name, check=False)


def test_a_build_stops_before_starting_when_storage_is_short():
    r = subprocess.run(["deploy/image/build.sh", "runtime", "localhost/vae-test-never:latest"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "IMAGE_MIN_FREE_GB": str(10**9)})
    assert r.returncode == 1
    assert "IMAGE_MIN_FREE_GB" in r.stderr and "GB free under" in r.stderr
    assert "buildah bud" not in r.stdout
    assert not image.available("localhost/vae-test-never:latest")
