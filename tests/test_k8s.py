"""deploy/k8s/ as one `kubectl apply -f deploy/k8s/`: every object valid against the Kubernetes
schemas (kubernetes-validate, no cluster here, so no server-side dry-run), and every reference
one object makes to another (config maps and their keys, secrets, claims, volumes, named
ports, selectors, scale targets) resolved within the set. The custom resources for operators
(KServe, KubeRay, Prometheus Operator) live in deploy/k8s/operators/, applied only where those
run; test_deploy.py checks their fields."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent


def _objects() -> list[dict]:
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def _pod_templates(objs: list[dict]) -> list[tuple[str, dict]]:
    return [(o["metadata"]["name"], o["spec"]["template"]) for o in objs
            if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def unresolved(objs: list[dict]) -> list[str]:
    """Every reference in the set that points at nothing in the set."""
    have = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    out: list[str] = []
    for owner, tpl in _pod_templates(objs):
        spec, labels = tpl["spec"], tpl["metadata"].get("labels", {})
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                if ("PersistentVolumeClaim", claim) not in have:
                    out.append(f"{owner}: volume {v['name']}: claim {claim} is not in the set")
            for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if key in v:
                    name = v[key].get("name") or v[key].get("secretName")
                    if (kind, name) not in have and not v[key].get("optional"):
                        out.append(f"{owner}: volume {v['name']}: {kind} {name} missing")
        containers = [*spec.get("initContainers", []), *spec["containers"]]
        ports = {p["name"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}
        for c in containers:
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    out.append(f"{owner}/{c['name']}: mount {m['name']} has no volume")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in ref and not ref[key].get("optional"):
                        target = have.get((kind, ref[key]["name"]))
                        if target is None or ref[key]["key"] not in target.get("data", {}):
                            out.append(f"{owner}/{c['name']}: env {e['name']}: {kind} "
                                       f"{ref[key]['name']} key {ref[key]['key']} missing")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    out.append(f"{owner}/{c['name']}: {probe} port {port} is not a named port")
            if c["image"].endswith(":latest") or ":" not in c["image"].rsplit("/", 1)[-1]:
                out.append(f"{owner}/{c['name']}: image {c['image']} is not a fixed tag")
        for o in objs:
            selector = o.get("spec", {}).get("selector")
            if o["kind"] == "Service":
                if not selector or not selector.items() <= labels.items():
                    out.append(f"Service {o['metadata']['name']}: selector matches no pod")
                for p in o["spec"]["ports"]:
                    if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
                        out.append(f"Service {o['metadata']['name']}: targetPort "
                                   f"{p['targetPort']} is not a named container port")
            if o["kind"] == "PodDisruptionBudget" and not \
                    selector["matchLabels"].items() <= labels.items():
                out.append(f"PodDisruptionBudget {o['metadata']['name']}: matches no pod")
    for o in objs:
        if o["kind"] == "HorizontalPodAutoscaler":
            t = o["spec"]["scaleTargetRef"]
            if (t["kind"], t["name"]) not in have:
                out.append(f"HorizontalPodAutoscaler: target {t['kind']} {t['name']} missing")
    return out


def test_the_set_validates_as_one_apply():
    files = [str(f) for f in sorted(K8S.glob("*.yaml"))]
    r = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", *files],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    kinds = {o["kind"] for o in _objects()}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
            "PodDisruptionBudget"} <= kinds
    assert not kinds & {"InferenceService", "RayJob", "ServiceMonitor"}  # operators/ only


def test_every_reference_resolves_within_the_set():
    assert unresolved(_objects()) == []


def test_the_check_catches_what_used_to_leave_pods_pending():
    objs = _objects()
    broken = copy.deepcopy(objs)
    deployment = next(o for o in broken if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "old", "persistentVolumeClaim": {"claimName": "vae-models"}})
    pod["containers"][0]["image"] = "vae-serving:latest"
    broken = [o for o in broken if o["kind"] != "ConfigMap"]
    problems = unresolved(broken)
    assert any("claim vae-models" in p for p in problems), problems
    assert any("vae-serving:latest" in p for p in problems), problems
    assert any("ConfigMap vae-models key url" in p for p in problems), problems


def test_drain_budget_and_spread():
    """The kubelet's kill comes after preStop + drain + the longest request; one pod at a time
    may be evicted at any replica count; replicas prefer different nodes."""
    objs = _objects()
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    pre_stop = int(server["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] >= \
        pre_stop + float(env["VAE_DRAIN_S"]) + float(env["VAE_TIMEOUT_S"])
    pdb = next(o for o in objs if o["kind"] == "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys
    assert {c["image"] for c in [*pod["initContainers"], server]} == {server["image"]}
