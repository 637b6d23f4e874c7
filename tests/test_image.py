"""The built container images, run the way a container runtime would run them: their own
ENTRYPOINT/CMD, USER, WORKDIR and environment via `buildah run --isolation chroot` (no Docker
engine here), on 127.0.0.1 and free ports. `runtime` is the Dockerfile's image (`make image`);
`bento` is BentoML's (`make bento-image`: `bentoml build` + `bentoml containerize`), where what
BentoML's generated image does differently is skipped with the reason. Runs in
`make test-image`, which builds the images first; plain `make test` skips it (building takes
minutes)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import httpx
import numpy as np
import pytest

from conftest import ROOT, Server
from support import image
from support.servers import descendants

IMAGES = {"runtime": os.environ.get("VAE_IMAGE", image.IMAGE),
          "bento": os.environ.get("VAE_BENTO_IMAGE", "localhost/vae-bento:latest")}
pytestmark = pytest.mark.skipif(not os.environ.get("VAE_IMAGE_TEST"),
                                reason="the image smoke test runs in `make test-image` "
                                "(it builds the images)")


@pytest.fixture(scope="module", params=list(IMAGES))
def box(request):
    name = IMAGES[request.param]
    if not image.available(name):
        pytest.skip(f"{name} is not built (make image / make bento-image)")
    with image.container(name) as c:
        c.kind = request.param
        yield c


@pytest.fixture(scope="module")
def served(box, tmp_path_factory):
    with box.serve(tmp_path_factory.mktemp("image")) as srv:
        yield srv


def digit() -> list:
    from sklearn.datasets import load_digits

    return (load_digits().images[:3] / 16.0).reshape(3, 1, 8, 8).tolist()


def test_encode_equals_the_source_tree_on_the_images_own_models(box, served, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(box.models(), models)  # the image's own model repository
    got = httpx.post(served.url + "/encode", json={"inputs": digit()}, timeout=30)
    assert got.status_code == 200, got.text
    with Server(models) as src:
        want = httpx.post(src.url + "/encode", json={"inputs": digit()}, timeout=30).json()
        here = httpx.post(src.url + "/model", json={}, timeout=30).json()
    there = httpx.post(served.url + "/model", json={}, timeout=30).json()
    for key in ("mu", "sigma"):
        np.testing.assert_allclose(got.json()[key], want[key], atol=1e-6, rtol=0)
    assert there["graphs"] == here["graphs"]  # the same graphs, by sha256
    assert there["version"] == here["version"] and there["provider"] == "CPUExecutionProvider"


def test_metrics_and_grpc(served):
    import tritonclient.grpc as tg

    with tg.InferenceServerClient(served.grpc_url) as client:
        assert client.is_server_ready()
        x = tg.InferInput("x", [1, 1, 8, 8], "FP32")
        x.set_data_from_numpy(np.asarray(digit()[:1], np.float32))
        out = client.infer("encoder", [x]).as_numpy("mu")
    want = httpx.post(served.url + "/encode", json={"inputs": digit()[:1]}, timeout=10).json()
    np.testing.assert_allclose(out, want["mu"], atol=1e-6)
    text = httpx.get(served.url + "/metrics", timeout=10).text
    for series in ("vae_requests_total", "vae_request_duration_seconds_bucket", "vae_model_info"):
        assert series in text, series


def test_healthcheck_command_passes_inside_the_image(box, served):
    if box.kind == "bento":
        assert "Healthcheck" not in image.config(box.image)
        pytest.skip("BentoML's generated image declares no HEALTHCHECK (probes do the job)")
    check = image.config(box.image)["Healthcheck"]["Test"]
    assert check[0] == "CMD", check
    env = {"BENTOML_HOST": "127.0.0.1", "BENTOML_PORT": str(served.port)}
    r = box.run(check[1:], env)
    assert r.returncode == 0, r.stderr
    r = box.run(check[1:], {**env, "BENTOML_PORT": "1"})  # nothing listens there: unhealthy
    assert r.returncode == 1


def test_runs_as_its_non_root_user_without_torch(box, served):
    user = box.uid(image.config(box.image)["User"])
    assert user == (10001 if box.kind == "runtime" else 1034)  # BentoML's own "bentoml" user
    uids = {_uid(pid) for pid in descendants(served.proc.pid)} - {None, 0}  # 0: buildah's
    assert uids == {user}, uids  # every bentoml process
    python = "/venv/bin/python" if box.kind == "runtime" else "/app/.venv/bin/python"
    r = box.run([python, "-c", "import torch"])
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr


# imports what a worker imports, then lists the imported source files that have no bytecode
_NO_BYTECODE = """
import importlib.util, os, sys
import bentoml, service.app, service.healthcheck, uvicorn
files = [getattr(m, "__file__", None) or "" for m in list(sys.modules.values())]
print([f for f in files if f.endswith(".py")
       and not os.path.exists(importlib.util.cache_from_source(f))])
"""


def test_the_serving_imports_have_bytecode_its_user_need_not_write(box):
    """pip compiled nothing in the runtime image; its build's warm start did, for what a server
    imports. uid 10001 cannot write __pycache__, so a gap would be compiled at every start."""
    if box.kind == "bento":
        pytest.skip("BentoML's image keeps pip's bytecode for every installed module")
    r = box.run(["/venv/bin/python", "-c", _NO_BYTECODE])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def _uid(pid: int) -> int | None:
    try:
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return None
    cmdline = open(f"/proc/{pid}/cmdline").read()
    if "bentoml" not in cmdline and "service.serve" not in cmdline:
        return None
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_sigterm_stops_it_with_in_flight_requests_answered(box, tmp_path):
    with box.serve(tmp_path, {"VAE_BATCH_MAX_WAIT_MS": "1500"}) as srv:
        answers: list[int] = []

        def call() -> None:
            r = httpx.post(srv.url + "/encode", json={"inputs": digit()[:1]}, timeout=30)
            answers.append(r.status_code)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the calls wait in the batch window: in flight
        server = [p for p in descendants(srv.proc.pid) if _uid(p) not in (None, 0)][0]
        t0 = time.perf_counter()
        os.kill(server, signal.SIGTERM)
        for t in threads:
            t.join(30)
        srv.proc.wait(timeout=40)
        elapsed = time.perf_counter() - t0
    assert answers == [200] * 4, answers
    assert elapsed < 15, elapsed  # drain (5 s default) + 10 s
    print(f"SIGTERM to exit: {elapsed:.2f} s")


def test_image_save_writes_an_archive_docker_and_podman_load(box, tmp_path):
    """`make image-save`'s docker-archive: docker's manifest.json layout, and `podman load`
    gives back the same image (docker itself is not installed here)."""
    import json
    import subprocess
    import tarfile

    if box.kind != "runtime":
        pytest.skip("make image-save writes the runtime image")
    tar = tmp_path / "vae-serving.tar"
    subprocess.run(["make", "-s", "image-save", f"SAVE={tar}"], cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    with tarfile.open(tar) as t:
        manifest = json.load(t.extractfile("manifest.json"))
        names = set(t.getnames())
    assert len(manifest) == 1 and "vae-serving:latest" in " ".join(manifest[0]["RepoTags"])
    assert manifest[0]["Config"] in names and all(layer in names for layer in manifest[0]["Layers"])
    loaded = subprocess.run(["podman", "load", "-q", "-i", str(tar)], capture_output=True,
                            text=True, check=True).stdout
    assert "vae-serving:latest" in loaded
    try:
        ids = [image.buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", name)
               .stdout.strip() for name in (box.image, "docker.io/library/vae-serving:latest")]
    finally:  # only the tag goes (the image keeps its own); left, it pins every old build
        image.buildah("rmi", "docker.io/library/vae-serving:latest")
    assert ids[0] == ids[1]


def test_the_init_containers_fetch_runs_in_the_image(box):
    """deploy/k8s/deployment.yaml's init container: the image's python, as its user, copies
    the image's own repository (no archive named) into the pod's folder and verifies it."""
    if box.kind == "bento":
        pytest.skip("the Kubernetes manifests run the Dockerfile's image")
    r = box.run(["/venv/bin/python", "-m", "modelrepo.fetch", "--into", "/tmp/srv-models",
                 "--url", "", "--sha256", "", "--fallback", "/models"])
    assert r.returncode == 0, r.stderr
    assert "holds digits/" in r.stdout, r.stdout
