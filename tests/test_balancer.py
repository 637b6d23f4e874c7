"""deploy/haproxy/haproxy.cfg through the real HAProxy (Debian's package): a call slower than the
balancer's server timeout runs once on the replicas, never again on a retry, because the replica
may still be computing it. The balancer's timeout is shortened (LB_SERVER_TIMEOUT, the file's
one setting for it) and the call made slow (a /score of many rows) instead of waiting 75 s."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtests.cluster import HAPROXY, Cluster

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(),
                                reason="haproxy is not installed (make system-deps)")


def _score_calls(url: str) -> float:
    """Every /score call the replica has counted, whatever its status."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(
        r'^vae_requests_total\{endpoint="/score",[^}]*\} (\S+)$', text, re.M))


def test_a_slow_call_runs_once(trained, tmp_path):
    rows = 200_000
    env = {"VAE_MAX_SCORE_ROWS": str(rows), "VAE_MAX_K": str(rows)}
    with Cluster(trained["repository"], "digits", tmp_path, replica_env=env,
                 lb_env={"LB_SERVER_TIMEOUT": "100ms"}) as cluster:
        replicas = [f"http://127.0.0.1:{http}" for http, _ in cluster.ports]
        # a small body: HAProxy replays only what fits its buffer (tune.bufsize, 16 kB)
        x = np.random.default_rng(0).random((8, 1, 8, 8)).round(2).tolist()
        body = {"inputs": x, "k": rows // 8 - 100, "seed": 0}  # sigma points + k draws per item
        took = []
        for u in replicas * 2:  # warm (reference scores, buffers), then timed on each
            t0 = time.monotonic()
            direct = httpx.post(u + "/score", json=body, timeout=120)
            took.append(time.monotonic() - t0)
            assert direct.status_code == 200, direct.text
        took = min(took[2:])
        if took < 0.3:
            pytest.skip(f"the slow call took only {took:.2f} s here: not slower than the "
                        "balancer's 0.1 s timeout by a margin")
        before = sum(_score_calls(u) for u in replicas)
        t0 = time.monotonic()
        r = httpx.post(cluster.url + "/score", json=body, timeout=120)
        assert r.status_code == 504, (took, time.monotonic() - t0, r.headers)  # HAProxy gave up
        # the replica finishes the call it was given; then nothing else arrives
        deadline, counts = time.monotonic() + 6 * took + 10, []
        while time.monotonic() < deadline:
            counts.append(sum(_score_calls(u) for u in replicas) - before)
            if len(counts) > 3 and counts[-1] >= 1 and counts[-1] == counts[-4]:
                break
            time.sleep(max(0.5, took / 2))
        time.sleep(took)  # long enough for a replayed call to have been counted too
        assert sum(_score_calls(u) for u in replicas) - before == 1, counts
