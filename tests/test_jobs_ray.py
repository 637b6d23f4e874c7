"""Offline jobs on a real Ray cluster that this module starts on this machine: a head node and a
second node joining it, one CPU each (`ray start`, as on any two machines). A job's output
equals the local engine's; a worker node killed mid-job still leaves every item written exactly
once (its shards are retried on the node that is left)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from support.servers import free_port

pytest.importorskip("ray", reason="the `jobs` extra (make test installs it)")

from jobs.work import read_results  # noqa: E402

RAY = Path(sys.executable).parent / "ray"
COMMON = ["--num-cpus", "1", "--object-store-memory", str(200 * 1024 * 1024),
          "--disable-usage-stats"]


@pytest.fixture(scope="module", autouse=True)
def no_token_auth():
    """Ray >= 2.5x turns token authentication on for every later `ray start` once a local
    `ray.init()` has left ~/.ray/auth_token (Ray Serve, a local Ray job), and its joining node
    then fails with InvalidAuthToken: this test's cluster says its mode explicitly."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        yield


def _ray(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAY), *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, **kw)


def _join(address: str, log: Path) -> subprocess.Popen:
    """A second node, in the foreground of a process group this test owns (to kill it)."""
    with open(log, "ab") as out:
        return subprocess.Popen([str(RAY), "start", "--address", address, "--block", *COMMON],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def _nodes(address: str) -> int:
    code = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    return int(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("ray")
    port = free_port()
    address = f"127.0.0.1:{port}"
    r = _ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--include-dashboard", "false", *COMMON)
    assert r.returncode == 0, r.stdout + r.stderr
    worker = _join(address, work / "worker.log")
    try:
        deadline = time.monotonic() + 120
        while _nodes(address) < 2:
            assert time.monotonic() < deadline, (work / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield address, work, worker
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        _ray("stop", "--force")


def _job(address: str, repo: Path, inp: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs", "encode", "--repository", str(repo), "--model", "digits",
         "--input", str(inp), "--output", str(out), "--engine", "ray", "--ray-address",
         address, "--workers", "2", *extra], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def test_a_ray_job_equals_the_local_one(cluster, trained, tmp_path):
    address, _, _ = cluster
    x = np.random.default_rng(0).random((3000, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = _job(address, trained["repository"], tmp_path / "x.npy", tmp_path / "ray",
                "--shard-size", "250", "--samples", "2", "--fields", "mu,sigma,logvar")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    from jobs.cli import main

    main(["encode", "--repository", str(trained["repository"]), "--model", "digits",
          "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "local"),
          "--samples", "2", "--fields", "mu,sigma,logvar"])
    ray_res, local = read_results(tmp_path / "ray"), read_results(tmp_path / "local")
    assert list(ray_res["id"]) == [str(i) for i in range(3000)]
    for f in ("mu", "sigma", "logvar", "z"):
        np.testing.assert_allclose(ray_res[f], local[f], atol=1e-5, err_msg=f)


def test_a_node_lost_mid_job_loses_no_item(cluster, trained, tmp_path):
    address, work, worker = cluster
    np.save(tmp_path / "x.npy", np.random.default_rng(1).random((40_000, 1, 8, 8),
                                                                 dtype=np.float32))
    proc = _job(address, trained["repository"], tmp_path / "x.npy", tmp_path / "out",
                "--shard-size", "500", "--batch-size", "32", "--samples", "8")
    deadline = time.monotonic() + 300
    while len(list((tmp_path / "out").glob("part-*.parquet"))) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.1)
    os.killpg(worker.pid, signal.SIGKILL)  # the second node and everything running on it
    at_kill = len(list((tmp_path / "out").glob("part-*.parquet")))
    assert at_kill < 80 and proc.poll() is None  # the job was mid-way
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    res = read_results(tmp_path / "out")
    assert sorted(map(int, res["id"])) == list(range(40_000))  # every item exactly once
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 80
    shutil.rmtree(tmp_path / "out")
