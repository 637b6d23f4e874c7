"""Live model versions and gRPC over TLS, each on its own server: a version exported while
the server runs becomes the served `latest` once it is ready; a version that fails
verification is reported and never served; TLS from files."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from tests.conftest import Server


def _sample_version(client, mod) -> str:
    n = mod.InferInput("n", [1], "INT32")
    n.set_data_from_numpy(np.array([1], np.int32))
    r = client.infer("sample", [n])
    return r.get_response()["model_version"] if mod is th else r.get_response().model_version


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.2)


def test_new_version_becomes_latest_and_a_bad_one_is_refused(trained, tmp_path):
    from export.onnx_export import export_checkpoint

    repo = tmp_path / "repository"
    shutil.copytree(trained["repository"], repo)
    with Server(repo, {"VAE_REPOSITORY_POLL_S": "0.5"}) as srv:
        h = th.InferenceServerClient(srv.url.removeprefix("http://"))
        g = tg.InferenceServerClient(srv.grpc_url)
        assert _sample_version(h, th) == "1" and _sample_version(g, tg) == "1"

        export_checkpoint(trained["checkpoint"], repo, "digits")  # publishes digits/2
        _wait(lambda: _sample_version(h, th) == "2")  # found by polling, verified, warmed
        assert _sample_version(g, tg) == "2"
        assert h.get_model_metadata("decoder")["versions"] == ["2"]  # `latest`: 1 retired
        # the operator's log says so (BentoML's logging would drop the service's INFO lines)
        _wait(lambda: "now serving digits/2" in srv.output() and "retired digits/1" in
              srv.output(), timeout=10)
        index = {(m["name"], m["version"]): m["state"] for m in h.get_model_repository_index()}
        assert index[("encoder", "2")] == "READY" and index[("encoder", "1")] != "READY"

        # a corrupted copy, published as version 3: reported, not served, latest stays 2
        bad = tmp_path / "staging"
        shutil.copytree(repo / "digits" / "2", bad)
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["version"] = 3
        (bad / "manifest.json").write_text(json.dumps(manifest))
        with open(bad / "decoder.onnx", "ab") as f:
            f.write(b"tampered")
        bad.rename(repo / "digits" / "3")
        with pytest.raises(InferenceServerException) as info:
            g.load_model("encoder")  # explicit load: answers with the reason
        assert "sha256" in info.value.message() and "decoder.onnx" in info.value.message()
        rows = [m for m in g.get_model_repository_index().models if m.version == "3"]
        assert rows and all(m.state == "UNAVAILABLE" and "sha256" in m.reason for m in rows)
        assert _sample_version(h, th) == "2" and not h.is_model_ready("encoder", "3")
        with pytest.raises(InferenceServerException) as info:
            n = th.InferInput("n", [1], "INT32")
            n.set_data_from_numpy(np.array([1], np.int32))
            h.infer("sample", [n], model_version="3")
        assert info.value.status() == "404" and "sha256" in info.value.message()
        h.close()
        g.close()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return key, cert


def test_grpc_over_tls(trained, tmp_path):
    key, cert = _self_signed(tmp_path)
    env = {"VAE_GRPC_TLS_CERT": str(cert), "VAE_GRPC_TLS_KEY": str(key)}
    with Server(trained["repository"], env) as srv:
        with tg.InferenceServerClient(srv.grpc_url, ssl=True,
                                      root_certificates=str(cert)) as g:
            assert g.is_server_ready() and _sample_version(g, tg) == "1"
        with tg.InferenceServerClient(srv.grpc_url) as plain:  # no TLS: refused
            with pytest.raises(InferenceServerException):
                plain.is_server_live(client_timeout=5)


def test_taken_grpc_port_stops_the_start(trained):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        srv = Server(trained["repository"], {"VAE_GRPC_PORT": str(s.getsockname()[1])})
        try:
            assert srv.proc.wait(timeout=60) != 0
            assert "VAE_GRPC_PORT" in srv.output()
        finally:
            srv.stop()


def test_a_call_keeps_the_version_it_resolved_even_once_retired(trained, monkeypatch):
    """A V2 call resolves `latest` once (its inputs are checked against that version) and runs
    on it, even when a newer version retires it in between: no NOT_FOUND for the version the
    call itself chose (found by the chaos gRPC rollout, 1 call in 42,220)."""
    import asyncio

    from service.config import load_settings
    from service.errors import NotReady, VersionNotFound
    from service.operations import v2
    from service.operations.api import Operations
    from service.runtime.registry import ModelRegistry

    monkeypatch.setenv("VAE_MODEL_REPOSITORY", str(trained["repository"]))
    settings = load_settings()
    registry = ModelRegistry.load(settings)
    models = registry.get(None)
    ops = Operations(registry, settings)
    rt = v2.resolve(ops, "sample", None)
    version = rt.manifest.version
    del models.runtimes[version]  # what the watcher does when a newer version is ready
    with pytest.raises((VersionNotFound, NotReady)):  # unpinned, the version is gone
        ops.runtime(version)
    n = v2.Tensor("n", "INT32", [1], np.array([2], np.int32))
    outs, res = asyncio.run(v2.infer(ops, rt, "sample", [n], {}))
    assert res.version == version and outs["x"].shape[0] == 2
