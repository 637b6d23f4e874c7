"""Nothing phones home. onnxruntime (>= 1.29 on Linux) creates a device ID and an offline
telemetry store under ~/.cache/Microsoft and uploads usage events unless ORT_DISABLE_TELEMETRY
is set before its first session; the project's packages set it themselves. Each case runs in a
fresh interpreter with a fresh HOME and the variable removed from its environment.

onnxruntime also stays silent on its own where it believes it runs in CI (`CI`, `GITHUB_ACTIONS`,
`TF_BUILD`, `ORT_RUNNING_UNIT_TESTS` set, measured with 1.32): those are removed too, or every
case here would pass on a CI machine without proving anything.

The control case (onnxruntime alone) fails when onnxruntime stops writing those files or
renames its switch: then this module and the comment in service/__init__.py need a new look."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

# Each of these alone keeps onnxruntime from writing anything (measured), as the switch does.
SILENCERS = ("ORT_DISABLE_TELEMETRY", "CI", "GITHUB_ACTIONS", "TF_BUILD", "ORT_RUNNING_UNIT_TESTS")


def _files_after(code: str, home: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in SILENCERS}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


SESSION = "ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])"


def test_control_onnxruntime_alone_writes_its_device_id(trained, tmp_path):
    graph = str(trained["version_dir"] / "encoder.onnx")
    files = _files_after("import onnxruntime as ort; " + SESSION.format(path=graph), tmp_path)
    assert any("deviceid" in f for f in files), files


def test_the_service_export_and_benchmarks_switch_it_off(trained, tmp_path):
    graph = str(trained["version_dir"] / "encoder.onnx")
    for package in ("service.runtime.engine", "export.onnx_export", "benchmarks.serving"):
        home = tmp_path / package
        home.mkdir()
        code = f"import {package}; import onnxruntime as ort; " + SESSION.format(path=graph)
        assert _files_after(code, home) == [], package


def test_a_served_model_writes_nothing_under_home(trained, tmp_path):
    """The real server, started without the variable: its workers create sessions, serve."""
    import httpx

    from conftest import Server

    before = {k: os.environ.pop(k) for k in SILENCERS if k in os.environ}
    try:
        with Server(trained["repository"], {"HOME": str(tmp_path)}) as srv:
            r = httpx.post(srv.url + "/sample", json={"n": 2, "seed": 0}, timeout=30)
            assert r.status_code == 200
    finally:
        os.environ.update(before)
    assert not (tmp_path / ".cache" / "Microsoft").exists()
