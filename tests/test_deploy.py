"""Deployment artefacts, each checked by the real tool: hadolint, kubernetes-validate, promtool,
`bentoml build`, a real Prometheus scraping the running service, and the runtime stage's exact
install (a fresh venv with only the serve + cpu extras serves a correct /encode, no torch)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import numpy as np
import yaml

from tests.conftest import ROOT, Server, free_port

BIN = Path(sys.executable).parent
K8S = ROOT / "deploy" / "k8s"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def test_dockerfile_passes_hadolint():
    r = _run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")])
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_runs_the_makefiles_commands():
    """The image's install and serve steps are the ones CI exercises."""
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install -c constraints.txt '.[serve,cpu]'" in text  # runtime: no torch
    assert "pip install -c constraints.txt '.[serve,gpu]'" in text  # gpu target
    assert "BENTOML_DO_NOT_TRACK=true" in text and "USER 10001" in text
    assert "EXPOSE 3000 8001" in text and '"-m", "service.healthcheck"' in text
    # `bentoml serve` with its own metrics directory; host and ports from the environment
    assert text.count('CMD ["/venv/bin/python", "-m", "service.serve"]') == 2
    assert text.count("BENTOML_HOST=0.0.0.0 BENTOML_PORT=3000 VAE_GRPC_HOST=0.0.0.0 "
                      "VAE_GRPC_PORT=8001") == 2


def test_custom_resources_name_their_required_fields():
    service = yaml.safe_load((K8S / "service.yaml").read_text())
    port_names = {p["name"] for p in service["spec"]["ports"]}
    sm = yaml.safe_load((K8S / "operators" / "servicemonitor.yaml").read_text())
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
    assert sm["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert all(e["port"] in port_names and e["path"] == "/metrics"
               for e in sm["spec"]["endpoints"])
    isvc = yaml.safe_load((K8S / "operators" / "inferenceservice.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container" and container["image"]
    port = container["ports"][0]["containerPort"]
    assert str(port) in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["VAE_MODEL_REPOSITORY"] == "/mnt/models" and env["BENTOML_DO_NOT_TRACK"] == "true"
    # what the Deployment has: probes, drain, the grace it needs, non-root, read-only root
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["lifecycle"]["preStop"] and env["VAE_DRAIN_S"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["terminationGracePeriodSeconds"] >= 5 + float(env["VAE_DRAIN_S"]) + \
        float(env["VAE_TIMEOUT_S"])
    assert predictor["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not env["STORAGE_URI"].startswith("pvc://")  # no claim outside the set
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_rayjob_runs_a_valid_job_in_valid_pods(tmp_path):
    """deploy/k8s/operators/rayjob.yaml (never applied here): KubeRay's fields, an entrypoint
    that the jobs command accepts, the pinned Ray, and its pod templates validated as Pods."""
    import shlex

    from jobs.cli import parser

    job = yaml.safe_load((K8S / "operators" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    cmd = shlex.split(spec["entrypoint"])
    assert cmd[:3] == ["python", "-m", "jobs"]
    args = parser().parse_args(cmd[3:])  # exits 2 on an option the command does not have
    assert args.engine == "ray" and args.resume and args.ray_address is None  # RAY_ADDRESS
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split()
                if "==" in line)
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == pins["ray"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    pods = []
    for i, group in enumerate(groups):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"g{i}"},
               "spec": group["template"]["spec"]}
        (tmp_path / f"pod{i}.yaml").write_text(yaml.safe_dump(pod))
        pods.append(str(tmp_path / f"pod{i}.yaml"))
        assert all(c["image"] == "vae-serving:jobs" for c in pod["spec"]["containers"])
        mounts = {m["name"] for c in pod["spec"]["containers"] for m in c["volumeMounts"]}
        assert mounts <= {v["name"] for v in pod["spec"]["volumes"]}
    r = _run([str(BIN / "kubernetes-validate"), "--strict", *pods])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "AS jobs" in (ROOT / "Dockerfile").read_text()  # the image the pods run


def test_alert_rules_pass_promtool():
    r = _run(["promtool", "check", "rules", str(ROOT / "deploy" / "alerts.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    # the config as shipped, from a checkout (its rule path is relative to the file)
    r = _run(["promtool", "check", "config", str(ROOT / "deploy" / "prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    assert all("vae_" in t["expr"] for p in dashboard["panels"] for t in p["targets"])


def test_every_alert_has_firing_and_quiet_unit_tests():
    """promtool's unit tests of the rules pass, and each alert is tested both ways."""
    r = _run(["promtool", "test", "rules", str(ROOT / "deploy" / "alerts.test.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((ROOT / "deploy" / "alerts.test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    assert names == {c["alertname"] for c in cases if c["exp_alerts"]}
    assert names == {c["alertname"] for c in cases if not c["exp_alerts"]}


def test_bento_requirements_match_the_constraints():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    pins = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    for line in (ROOT / "deploy" / "bento-requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert pins[name.split("[")[0].lower().replace("_", "-")] == version, line


def test_bentoml_build_packs_the_model(trained, tmp_path):
    ctx = tmp_path / "ctx"
    for part in ("service", "modelrepo"):
        shutil.copytree(ROOT / part, ctx / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "bentofile.yaml", ctx)
    (ctx / "deploy").mkdir()
    shutil.copy(ROOT / "deploy" / "bento-requirements.txt", ctx / "deploy")
    shutil.copytree(trained["repository"], ctx / "models")
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "true"}
    r = _run([str(BIN / "bentoml"), "build", str(ctx)], env=env, cwd=ctx, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (bento,) = [p for p in (tmp_path / "home" / "bentos" / "vae").iterdir() if p.name != "latest"]
    manifest = json.loads((bento / "src/models/digits/1/manifest.json").read_text())
    for entry in manifest["files"]:
        assert (bento / "src/models/digits/1" / entry["path"]).is_file(), entry["path"]
    for part in ("service/app.py", "service/doors/front_door.py", "service/runtime/engine.py",
                 "service/operations/api.py", "service/lifecycle/calls.py",
                 "service/doors/ui/index.html"):
        assert (bento / "src" / part).is_file(), part  # every room of the layout is packed
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "service.app:VAEService"
    assert {e["name"] for e in info["envs"]} >= {"BENTOML_DO_NOT_TRACK", "VAE_MODEL_REPOSITORY"}


def _query(prom: str, expr: str) -> float | None:
    r = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=5).json()
    result = r["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _results(prom: str, expr: str) -> list:
    try:
        return httpx.get(prom + "/api/v1/query", params={"query": expr},
                         timeout=5).json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError):
        return []


def test_prometheus_scrapes_the_running_service(trained, tmp_path):
    import tritonclient.grpc as tg

    with Server(trained["repository"]) as srv:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "vae", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [f"127.0.0.1:{srv.port}"]}]}]}))
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for i in range(5):
                assert httpx.post(srv.url + "/sample", json={"n": 2, "seed": i}).status_code == 200
            assert httpx.post(srv.url + "/sample", json={"n": 0}).status_code == 400
            with tg.InferenceServerClient(srv.grpc_url) as g:
                n = tg.InferInput("n", [1], "INT32")
                n.set_data_from_numpy(np.array([3], np.int32))
                g.infer("sample", [n])
            req = 'vae_requests_total{endpoint="/sample",model="digits",protocol="http",status='
            want = {req + '"200"}': 5, req + '"400"}': 1,
                    'vae_items_total{endpoint="/sample",model="digits",protocol="http"}': 10,
                    'vae_items_total{endpoint="/v2/models/sample/infer",model="digits",'
                    'protocol="grpc"}': 3,
                    'up{job="vae"}': 1}
            deadline, seen = time.monotonic() + 60, {}
            while time.monotonic() < deadline:
                try:
                    seen = {q: _query(url, q) for q in want}
                except (httpx.HTTPError, KeyError, ValueError):
                    seen = {}
                if seen == want:
                    break
                time.sleep(0.5)
            assert seen == want
            # every query of the dashboard answers with data from the live service
            dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
            exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
            empty = exprs
            while empty and time.monotonic() < deadline + 30:
                empty = [e for e in empty if not _results(url, e)]
                time.sleep(0.5)
            assert not empty, empty
        finally:
            prom.terminate()
            prom.wait(timeout=20)


def test_runtime_stage_install_serves_without_torch(trained, tmp_path):
    """What the Dockerfile's serve-venv stage installs, in a fresh venv, from a folder holding
    only what it copies (no code: dependencies and the project's metadata), running the code
    the runtime stage copies: serves a correct /encode and V2 metadata with the version."""
    deps, app = tmp_path / "deps", tmp_path / "app"
    deps.mkdir()
    for f in ("pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / f, deps)
    (deps / "README.md").touch()  # the stage writes an empty one (the long description only)
    for part in ("service", "modelrepo"):
        shutil.copytree(ROOT / part, app / part, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], check=True)
    r = _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-c",
              "constraints.txt", ".[serve,cpu]"], cwd=deps, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _run([str(venv / "bin" / "python"), "-c", "import torch"]).returncode != 0
    site = _run([str(venv / "bin" / "python"), "-c",
                 "import site; print(site.getsitepackages()[0])"], check=True).stdout.strip()
    assert not (Path(site) / "service").exists()  # the one copy is the runtime stage's
    srv = Server(trained["repository"], bentoml=venv / "bin" / "bentoml", cwd=app)
    with srv:
        x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        got = httpx.post(srv.url + "/encode", json={"inputs": x.tolist()}, timeout=30).json()
        meta = httpx.get(srv.url + "/v2", timeout=30).json()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["version"] == project["version"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(trained["version_dir"] / "encoder.onnx"))
    mu, logvar = session.run(["mu", "logvar"], {"x": x})
    np.testing.assert_allclose(got["mu"], mu, atol=1e-5)
    np.testing.assert_allclose(got["logvar"], logvar, atol=1e-5)



def test_compose_publishes_on_loopback_restarts_and_passes_the_token():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), name
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert "VAE_AUTH_TOKEN" in compose["services"]["vae"]["environment"]
    tool = shutil.which("docker-compose")
    if tool:  # Debian's docker-compose, where installed: the file as it reads it
        r = _run([tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"])
        assert r.returncode == 0, r.stdout + r.stderr
