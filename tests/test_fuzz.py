"""Schemathesis against the service's own OpenAPI document (GET /docs.json): generated and
boundary requests for every operation, at least 100 examples each; no answer may be a 5xx or
break the documented status codes and content types, and the server answers a normal request
afterwards. `make fuzz` runs the same with many more examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ROOT, Server

EXAMPLES = int(os.environ.get("VAE_FUZZ_EXAMPLES", "100"))


def test_schemathesis_finds_no_server_error(trained, tmp_path):
    st = Path(sys.executable).parent / "st"
    with Server(trained["repository"]) as srv:
        r = subprocess.run(
            [str(st), "run", srv.url + "/docs.json", "--max-examples", str(EXAMPLES),
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance",
             "--seed", "1", "--report", "junit", "--report-dir", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        assert "passed" in r.stdout and "failed" not in r.stdout.split("Test cases:")[-1]
        ok = httpx.post(srv.url + "/sample", json={"n": 2, "seed": 0})
        assert ok.status_code == 200 and len(ok.json()["z"]) == 2
