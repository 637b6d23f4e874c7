"""A client in another language, generated from the real server's /docs.json: `make ts-client`'s
steps (npm ci of clients/typescript's locked packages, openapi-typescript, tsc with strict
checks) in a copy of that folder, then the compiled example run by Node against the server:
encode, sample, score and a refused request, typed end to end."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import ROOT, Server

CLIENT = ROOT / "clients" / "typescript"


def _run(cmd: list[str], cwd, env=None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed (Debian's nodejs and npm; make system-deps)")
    work = tmp_path_factory.mktemp("ts")
    for name in ("package.json", "package-lock.json", "tsconfig.json"):
        shutil.copy(CLIENT / name, work)
    shutil.copytree(CLIENT / "src", work / "src", ignore=shutil.ignore_patterns("api.d.ts"))
    _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], work)
    return work


def test_a_generated_typescript_client_calls_the_service(trained, work):
    import os

    with Server(trained["repository"]) as srv:
        env = {**os.environ, "DOCS_URL": srv.url + "/docs.json"}
        _run(["npm", "run", "--silent", "generate"], work, env)
        api = (work / "src" / "api.d.ts").read_text()
        assert "EncodeResponse" in api and '"/v2/models/{model}/infer"' in api
        _run(["npm", "run", "--silent", "build"], work)  # tsc --strict against the types
        out = _run(["node", "dist/example.js", srv.url], work).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["model"] == "digits" and got["shape"] == [1, 8, 8]
    z = got["latent_dim"]
    assert got["mu_shape"] == [2, z] and got["z_shape"] == [2, 3, z]
    assert len(got["neg_elbo"]) == 2 and all(0 <= p <= 100 for p in got["percentile"])
    assert got["refused_status"] == 400
    assert got["refused_error"] == "n: 100000 exceeds the limit of 1024 (VAE_MAX_N)"


def test_a_request_the_document_does_not_allow_fails_to_compile(trained, work):
    """The types say something: a wrong value is a compile error, not a runtime 400."""
    bad = work / "src" / "bad.ts"
    bad.write_text('import createClient from "openapi-fetch";\n'
                   'import type { paths } from "./api.js";\n'
                   'const vae = createClient<paths>({ baseUrl: "http://127.0.0.1:1" });\n'
                   'await vae.POST("/sample", { body: { n: 2, output_format: "gif" } });\n')
    try:
        r = subprocess.run(["npx", "tsc", "-p", ".", "--noEmit"], cwd=work, capture_output=True,
                           text=True, timeout=300)
    finally:
        bad.unlink()
    assert r.returncode != 0 and '"gif"' in r.stdout, r.stdout[-2000:]
