"""The runtime image under a real Docker engine (support/docker.py: one that answers, or Debian's
dockerd started for the test): `docker load` of the image `make image` built, `docker run` as
docs/DEPLOYMENT.md documents it under `--cpus 1 --memory 512m` (host network: the engine here
has no bridge), and `docker build` of the Dockerfile as it is, with BuildKit's secret and bind
mount for the CA bundle and the torch wheel. Docker reports it healthy from the image's own
HEALTHCHECK, the limits reach the service, `/encode` equals a source-tree server on the image's
own models and the image Docker built, `docker logs` holds the JSON access log, `docker stop`
answers the calls in flight and exits 0, and a memory limit too small fails at start with a
message, once. Runs in `make test-docker` (part of
`make test-image`); plain `make test` skips it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from conftest import ROOT, Server
from support import docker, image
from support.servers import free_port

pytestmark = pytest.mark.skipif(not os.environ.get("VAE_DOCKER_TEST"),
                                reason="the Docker test runs in `make test-docker` / "
                                "`make test-image` (it needs the built image and an engine)")
TAG = "vae-serving:docker-test"


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    name = os.environ.get("VAE_IMAGE", image.IMAGE)
    if not image.available(name):
        pytest.skip(f"{name} is not built (make image)")
    archive = tmp_path_factory.mktemp("docker") / "image.tar"
    image.buildah("push", "-q", name, f"docker-archive:{archive}:{TAG}", timeout=900)
    with docker.engine() as e:
        e.run("load", "-q", "-i", str(archive), timeout=900)
        archive.unlink()
        yield e
        e.run("rmi", "-f", TAG, check=False)


class Running:
    def __init__(self, eng: docker.Engine, *flags: str, image: str = TAG):
        self.eng, self.name = eng, f"vae-test-{uuid.uuid4().hex[:8]}"
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        eng.run("run", "-d", "--name", self.name, "--network", "host", *flags,
                "-e", "BENTOML_HOST=127.0.0.1", "-e", f"BENTOML_PORT={self.port}",
                "-e", "VAE_GRPC_HOST=127.0.0.1", "-e", f"VAE_GRPC_PORT={self.grpc_port}", image)

    def state(self) -> dict:
        return json.loads(self.eng.run("inspect", "--format", "{{json .State}}",
                                       self.name).stdout)

    def wait(self, until, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if until(state):
                return state
            time.sleep(1)
        raise TimeoutError(f"{self.name}: {self.state()} {self.logs()[-2000:]}")

    def logs(self) -> str:
        r = self.eng.run("logs", self.name, check=False)
        return r.stdout + r.stderr

    def remove(self) -> None:
        self.eng.run("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def box(eng):
    c = Running(eng, "--cpus", "1", "--memory", "512m")
    try:
        c.wait(lambda s: s.get("Health", {}).get("Status") == "healthy")
        yield c
    finally:
        c.remove()


def digits() -> list:
    from sklearn.datasets import load_digits

    return (load_digits().images[:3] / 16.0).reshape(3, 1, 8, 8).tolist()


def test_healthy_by_its_own_healthcheck_under_its_limits(eng, box):
    assert box.state()["Health"]["Status"] == "healthy"
    inside = eng.run("exec", box.name, "/venv/bin/python", "-c",
                     "from service.runtime.engine import usable_cpus\n"
                     "from service.memory_floor import memory_limit_mb\n"
                     "print(usable_cpus(), memory_limit_mb())").stdout.split()
    assert [float(v) for v in inside] == [1.0, 512.0]  # --cpus 1, not the host's cores


def test_encode_equals_the_source_tree_on_the_images_own_models(eng, box, tmp_path):
    eng.run("cp", f"{box.name}:/models", str(tmp_path / "models"))
    got = httpx.post(box.url + "/encode", json={"inputs": digits()}, timeout=30)
    assert got.status_code == 200, got.text
    with Server(tmp_path / "models") as src:
        want = httpx.post(src.url + "/encode", json={"inputs": digits()}, timeout=30).json()
    for key in ("mu", "sigma"):
        assert np.abs(np.array(got.json()[key]) - np.array(want[key])).max() <= 1e-6


def test_docker_logs_hold_the_json_access_log(box):
    rid = f"docker-{uuid.uuid4().hex[:8]}"
    r = httpx.post(box.url + "/sample", json={"n": 1}, headers={"X-Request-ID": rid})
    assert r.status_code == 200
    time.sleep(1.5)  # the access log is written by its own thread
    lines = [json.loads(line) for line in box.logs().splitlines() if line.startswith("{")]
    assert any(d.get("request_id") == rid and d["path"] == "/sample" and d["status"] == 200
               for d in lines), box.logs()[-2000:]


def test_docker_stop_answers_the_calls_in_flight_and_exits_0(eng):
    c = Running(eng, "--cpus", "1", "--memory", "512m", "-e", "VAE_DRAIN_S=2")
    try:
        c.wait(lambda s: s.get("Health", {}).get("Status") == "healthy")
        seen: list = []
        done = threading.Event()

        def load() -> None:  # calls all through the stop, until nothing listens
            with httpx.Client(timeout=60) as client:
                while not done.is_set():
                    try:
                        r = client.post(c.url + "/score", json={"inputs": digits(), "k": 200})
                        seen.append((time.monotonic(), r.status_code))
                    except httpx.HTTPError as exc:
                        seen.append((time.monotonic(), type(exc).__name__))
                        time.sleep(0.05)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        eng.run("stop", "-t", "30", c.name, timeout=60)
        took = time.monotonic() - t0
        done.set()
        for t in threads:
            t.join()
        answered = [code for _, code in seen if isinstance(code, int)]
        assert answered and set(answered) == {200}, seen[-20:]
        assert any(t > t0 + 0.5 and code == 200 for t, code in seen), "none during the drain"
        assert c.state()["ExitCode"] == 0 and took < 30, (c.state(), took)
    finally:
        c.remove()


def test_a_memory_limit_too_small_fails_at_start_with_a_message(eng):
    c = Running(eng, "--memory", "64m", "--memory-swap", "64m")
    try:
        state = c.wait(lambda s: s["Status"] == "exited", timeout=120)
        assert state["ExitCode"] == 1 and not state["OOMKilled"], state
        assert "refusing to start: the memory limit is 64 MB" in c.logs(), c.logs()
        time.sleep(3)
        assert c.state()["Status"] == "exited"  # stays down: no restart loop
    finally:
        c.remove()


BUILT = "vae-serving:docker-built"
CA = "/etc/ssl/certs/ca-certificates.crt"


def _base() -> str:
    """The base `make image` built from: the official slim image when present, else the
    Debian-made one (deploy/image/build.sh decides the same way)."""
    official = "docker.io/library/python:3.11-slim-bookworm"
    return official if image.available(official) else "localhost/debian-python:3.11-bookworm"


@pytest.fixture(scope="module")
def built(eng, tmp_path_factory):
    """`docker build` of the Dockerfile as it is: the base loaded into Docker (no registry
    here), the CA bundle as the BuildKit secret `ca`, wheels/ (build.sh linked the torch wheel
    there) bind-mounted by the Dockerfile itself."""
    base = _base()
    if not image.available(base):
        pytest.skip(f"{base} is not there (make image makes it)")
    archive = tmp_path_factory.mktemp("base") / "base.tar"
    image.buildah("push", "-q", base, f"docker-archive:{archive}:{base.split('/', 1)[1]}")
    eng.run("load", "-q", "-i", str(archive), timeout=900)
    archive.unlink()
    wheel = any((ROOT / "wheels").glob("torch-*.whl"))
    t0 = time.monotonic()
    r = eng.run("build", "--network", "host", *(["--secret", f"id=ca,src={CA}"]
                                                if os.path.exists(CA) else []),
                "--build-arg", f"PYTHON_IMAGE={base.split('/', 1)[1]}",
                *(["--build-arg", "TORCH_INDEX="] if wheel else []), "-t", BUILT, str(ROOT),
                env={"DOCKER_BUILDKIT": "1"}, timeout=3600, check=False)
    assert r.returncode == 0, r.stderr[-4000:]
    print(f"docker build: {time.monotonic() - t0:.0f} s")
    yield BUILT
    eng.run("rmi", "-f", BUILT, check=False)


def test_docker_build_keeps_no_ca_bundle_or_wheel_in_a_layer(eng, built, tmp_path):
    saved = tmp_path / "built.tar"
    eng.run("save", "-o", str(saved), built, timeout=900)
    host_ca = open(CA, "rb").read() if os.path.exists(CA) else None
    with tarfile.open(saved) as outer:
        layers = [m for m in outer.getmembers() if m.name.endswith("layer.tar")]
        for layer in layers:
            with tarfile.open(fileobj=outer.extractfile(layer)) as tar:
                for m in tar.getmembers():
                    # (the base's own python-wheels are Debian's: only ours must not be there)
                    assert not (m.name.endswith(".whl") and "torch-" in m.name), m.name
                    assert not m.name.lstrip("./").startswith("wheels/"), m.name
                    if m.isfile() and m.name.endswith("ca-certificates.crt") and host_ca:
                        assert tar.extractfile(m).read() != host_ca, (layer.name, m.name)


def test_the_image_docker_builds_serves_what_buildahs_serves(eng, built, box):
    c = Running(eng, "--cpus", "1", "--memory", "512m", image=built)
    try:
        c.wait(lambda s: s.get("Health", {}).get("Status") == "healthy")
        body = {"inputs": digits()}
        ours = httpx.post(c.url + "/encode", json=body, timeout=30).json()
        theirs = httpx.post(box.url + "/encode", json=body, timeout=30).json()
        model = [httpx.post(u + "/model", json={}, timeout=30).json() for u in (c.url, box.url)]
        assert model[0]["graphs"] == model[1]["graphs"]  # the same trained bytes (seeded)
        assert ours["mu"] == theirs["mu"] and ours["sigma"] == theirs["sigma"]
    finally:
        c.remove()


PROMETHEUS_DOCKERFILE = """FROM {base}
COPY prometheus /bin/prometheus
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/tmp/prometheus"]
"""


def test_compose_up_serves_and_prometheus_scrapes_it(eng, tmp_path):
    """`docker-compose up` of the repository's file (Debian's docker-compose 1.29): the service
    from the image `make image` built, Prometheus from an image with the official one's
    entrypoint made of Debian's prometheus binary (no registry here); a call through the
    published port, then Prometheus' own query API shows it scraped."""
    compose = shutil.which("docker-compose")
    prometheus = shutil.which("prometheus")
    if compose is None or prometheus is None:
        pytest.skip("docker-compose or prometheus is not installed (make docker-deps, "
                    "make system-deps)")
    ctx = tmp_path / "prometheus-image"
    ctx.mkdir()
    shutil.copy(prometheus, ctx / "prometheus")
    (ctx / "Dockerfile").write_text(PROMETHEUS_DOCKERFILE.format(
        base=_base().split("/", 1)[1]))
    eng.run("tag", TAG, "vae-serving:latest")
    eng.run("build", "-q", "-t", "vae-prometheus:test", str(ctx), timeout=600)
    http, grpc_port, prom = free_port(), free_port(), free_port()
    env = {**os.environ, "PROMETHEUS_IMAGE": "vae-prometheus:test", "VAE_HTTP_PORT": str(http),
           "VAE_GRPC_PORT": str(grpc_port), "PROMETHEUS_PORT": str(prom)}
    if eng.host:
        env["DOCKER_HOST"] = eng.host
    project = ["docker-compose", "-p", f"vaetest{uuid.uuid4().hex[:6]}", "-f",
               str(ROOT / "docker-compose.yml")]
    up = subprocess.run([*project, "up", "-d", "--no-build"], env=env, capture_output=True,
                        text=True, timeout=600, cwd=ROOT)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        url, deadline = f"http://127.0.0.1:{http}", time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        r = httpx.post(url + "/sample", json={"n": 2, "seed": 0}, timeout=30)
        assert r.status_code == 200, r.text
        query = ('sum(vae_requests_total{endpoint="/sample",status="200"})')
        seen = None
        while time.monotonic() < deadline + 60:
            try:
                result = httpx.get(f"http://127.0.0.1:{prom}/api/v1/query",
                                   params={"query": query}, timeout=5).json()["data"]["result"]
                seen = float(result[0]["value"][1]) if result else None
            except (httpx.HTTPError, KeyError, ValueError):
                seen = None
            if seen == 1.0:
                break
            time.sleep(1)
        assert seen == 1.0, subprocess.run([*project, "logs", "--tail", "30"], env=env,
                                           capture_output=True, text=True).stdout[-3000:]
    finally:
        subprocess.run([*project, "down", "-t", "10"], env=env, capture_output=True, timeout=300)


def test_the_engine_command_is_debians_when_installed():
    """BuildKit is built into Debian's docker 20.10 client; another client may need buildx."""
    if os.path.exists("/usr/bin/docker"):
        assert docker.client() == "/usr/bin/docker"
    assert subprocess.run([docker.client(), "--version"], capture_output=True).returncode == 0
