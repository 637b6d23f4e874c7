"""Many VAEs, one service: two models of different shapes (the digits model, 8x8, and a 28x28
outside-style fc VAE) served together by one real server (VAE_MODELS=*), every endpoint of each
through HTTP JSON, V2 REST and gRPC compared with a single-model server of that model; unknown
models, live add and remove under load, a badly named folder and a broken model beside good
ones, and a named broken model refusing the start."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException
from two_models import export_classic28

from tests.conftest import Server

MODELS = ("digits", "classic28")
POLL = {"VAE_REPOSITORY_POLL_S": "0.3"}


def _rename_model(folder, name: str) -> None:
    """A copied model folder under another name: its manifests say so (the files they list
    are unchanged, so their sha256 still hold)."""
    for manifest in folder.glob("*/manifest.json"):
        data = json.loads(manifest.read_text())
        data["name"] = name
        manifest.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def repo(trained, tmp_path_factory):
    """digits and classic28, a folder whose name breaks the rule, and a broken model."""
    work = tmp_path_factory.mktemp("models")
    repo = work / "repository"
    shutil.copytree(trained["repository"] / "digits", repo / "digits")
    export_classic28(repo)
    spare = work / "spare"
    shutil.copytree(repo / "classic28", spare / "extra")  # added while serving
    _rename_model(spare / "extra", "extra")
    shutil.copytree(repo / "digits", repo / "Bad.Name")
    shutil.copytree(repo / "classic28", repo / "broken")
    _rename_model(repo / "broken", "broken")
    with open(repo / "broken" / "1" / "encoder.onnx", "ab") as f:
        f.write(b"\0")  # its sha256 no longer matches the manifest's
    return {"repo": repo, "spare": spare}


@pytest.fixture(scope="module")
def servers(repo):
    """One single-model server per model, then the multi-model one (started last: a server
    starting resets the shared metrics directory of servers started before it)."""
    singles = {m: Server(repo["repo"], {"VAE_MODEL_NAME": m, **POLL}) for m in MODELS}
    multi = None
    try:
        for s in singles.values():
            s.wait_ready()
        multi = Server(repo["repo"], {"VAE_MODELS": "*", "VAE_DEFAULT_MODEL": "digits",
                                      **POLL})
        multi.wait_ready()
        yield {"multi": multi, **singles}
    finally:
        for s in [*singles.values(), *([multi] if multi else [])]:
            s.stop()


def post(url: str, path: str, body: dict, status: int | None = 200, **kw) -> httpx.Response:
    """The answer, checked to have `status` (None: any)."""
    r = httpx.post(url + path, json=body, timeout=60, **kw)
    assert status is None or r.status_code == status, r.text
    return r


def _inputs(shape: list[int], n: int, seed: int) -> list:
    return np.random.default_rng(seed).random((n, *shape)).round(4).tolist()


def _requests(shape: list[int], z: int) -> list[tuple[str, dict]]:
    x, y = _inputs(shape, 3, 0), _inputs(shape, 3, 1)
    zs = np.random.default_rng(2).standard_normal((2, z)).round(4).tolist()
    return [("/encode", {"inputs": x, "samples": 2, "seed": 1}),
            ("/decode", {"z": zs}),
            ("/sample", {"n": 3, "seed": 4, "temperature": 0.7}),
            ("/interpolate", {"start_z": zs[:1], "end_z": zs[1:], "steps": 4,
                              "method": "slerp"}),
            ("/interpolate", {"start": x[:2], "end": y[:2], "steps": 3}),
            ("/reconstruct", {"inputs": x, "sample": True, "seed": 5}),
            ("/score", {"inputs": x, "k": 4, "seed": 6}),
            ("/compare", {"a": x, "b": y}),
            ("/neighbors", {"inputs": x, "k": 3}),
            ("/latent_map", {"projection": "pca"}),
            ("/model", {})]


def _same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and a and not isinstance(a[0], str | dict):
        np.testing.assert_allclose(np.array(a, dtype=float), np.array(b, dtype=float),
                                   atol=1e-6, rtol=0, err_msg=where)
    else:
        assert a == b, where


@pytest.mark.parametrize("model", MODELS)
def test_every_json_endpoint_answers_as_a_single_model_server(servers, model):
    multi, single = servers["multi"].url, servers[model].url
    info = post(single, "/model", {}).json()
    for path, body in _requests(info["input"]["shape"], info["latent_dim"]):
        alone = post(single, path, body)
        together = post(multi, path, {**body, "model": model})
        assert together.headers["x-model-name"] == model
        assert together.headers["x-model-version"] == alone.headers["x-model-version"]
        a, t = alone.json(), together.json()
        if path == "/model":
            models = t.pop("models")
            assert [m["name"] for m in models] == sorted(MODELS)
            assert [m["default"] for m in models] == [n == "digits" for n in sorted(MODELS)]
            a.pop("models")
        _same(a, t, f"{model} {path}")


@pytest.mark.parametrize("model", MODELS)
def test_v2_rest_and_grpc_answer_as_a_single_model_server(servers, model):
    info = post(servers[model].url, "/model", {}).json()
    shape, z = info["input"]["shape"], info["latent_dim"]
    x = np.asarray(_inputs(shape, 2, 7), np.float32)
    zs = np.random.default_rng(8).standard_normal((2, z)).astype(np.float32)
    calls = {"encoder": [("x", x, "FP32")], "decoder": [("z", zs, "FP32")],
             "sample": [("n", np.array([3], np.int32), "INT32"),
                        ("seed", np.array([9], np.int64), "INT64")],
             "interpolate": [("start_z", zs[:1], "FP32"), ("end_z", zs[1:], "FP32"),
                             ("steps", np.array([5], np.int32), "INT32")]}
    for mod, address in ((th, lambda s: s.url.removeprefix("http://")),
                         (tg, lambda s: s.grpc_url)):
        multi = mod.InferenceServerClient(address(servers["multi"]))
        single = mod.InferenceServerClient(address(servers[model]))
        for v2_model, tensors in calls.items():
            inputs = []
            for name, arr, dtype in tensors:
                t = mod.InferInput(name, list(arr.shape), dtype)
                t.set_data_from_numpy(arr)
                inputs.append(t)
            alone = single.infer(v2_model, inputs)
            together = multi.infer(f"{model}.{v2_model}", inputs)
            resp = together.get_response()
            named = resp["model_name"] if mod is th else resp.model_name
            assert named == f"{model}.{v2_model}"
            outs = ["mu", "logvar"] if v2_model == "encoder" else \
                ["x"] if v2_model == "decoder" else ["z", "x"]
            for out in outs:
                np.testing.assert_allclose(together.as_numpy(out), alone.as_numpy(out),
                                           atol=1e-6, err_msg=f"{mod.__name__} {v2_model}")
        meta = multi.get_model_metadata(f"{model}.encoder")
        shape_of = meta["inputs"][0]["shape"] if mod is th else list(meta.inputs[0].shape)
        assert [int(d) for d in shape_of] == [-1, *shape]
        multi.close()
        single.close()


def test_bare_v2_names_and_requests_without_a_model_are_the_default_models(servers):
    multi, digits = servers["multi"], servers["digits"]
    body = {"n": 2, "seed": 3}
    assert post(multi.url, "/sample", body).json() == post(digits.url, "/sample", body).json()
    r = post(multi.url, "/sample", body)
    assert r.headers["x-model-name"] == "digits"
    via_header = post(multi.url, "/sample", body, headers={"X-Model-Name": "classic28"})
    assert via_header.headers["x-model-name"] == "classic28"
    assert np.array(via_header.json()["outputs"]).shape == (2, 1, 28, 28)
    r = post(multi.url, "/sample", {**body, "model": "digits"}, 400,
             headers={"X-Model-Name": "classic28"})
    assert "disagree" in r.json()["error"]
    g = tg.InferenceServerClient(multi.grpc_url)
    n = tg.InferInput("n", [1], "INT32")
    n.set_data_from_numpy(np.array([2], np.int32))
    assert g.infer("sample", [n]).as_numpy("x").shape == (2, 1, 8, 8)
    assert g.infer("classic28.sample", [n]).as_numpy("x").shape == (2, 1, 28, 28)
    g.close()


def test_unknown_models_are_404_naming_the_served_ones(servers):
    multi = servers["multi"]
    r = post(multi.url, "/encode", {"inputs": [[0.0] * 64], "model": "nope"}, 404)
    assert "'nope' is not served" in r.json()["error"]
    assert "classic28, digits" in r.json()["error"]
    r = post(multi.url, "/v2/models/nope.encoder/infer", {"inputs": []}, 404)
    assert "nope" in r.json()["error"]
    post(multi.url, "/v2/models/digits.nope/infer", {"inputs": []}, 404)
    assert httpx.get(multi.url + "/v2/models/broken.encoder/ready").status_code == 400
    g = tg.InferenceServerClient(multi.grpc_url)
    n = tg.InferInput("n", [1], "INT32")
    n.set_data_from_numpy(np.array([1], np.int32))
    with pytest.raises(InferenceServerException) as info:
        g.infer("nope.sample", [n])
    assert "NOT_FOUND" in str(info.value.status()) and "digits" in info.value.message()
    g.close()


def test_a_bad_folder_and_a_broken_model_beside_good_ones(servers):
    multi = servers["multi"]
    assert httpx.get(multi.url + "/readyz").status_code == 200
    log = multi.log.read_text(errors="replace")
    assert "skipping folder" in log and "Bad.Name" in log
    assert "model broken is not served" in log and "sha256" in log
    rows = httpx.post(multi.url + "/v2/repository/index", json={}).json()
    states = {(r["name"], r["version"]): r["state"] for r in rows}
    for m in MODELS:
        for op in ("encoder", "decoder", "sample", "interpolate"):
            assert states[(f"{m}.{op}", "1")] == "READY"
    assert states[("encoder", "1")] == "READY"  # the default model's bare names
    broken = [r for r in rows if r["name"].startswith("broken.")]
    assert broken and all(r["state"] == "UNAVAILABLE" and "sha256" in r["reason"]
                          for r in broken)
    assert not any(r["name"].lower().startswith("bad") for r in rows)
    g = tg.InferenceServerClient(multi.grpc_url)
    names = {m.name for m in g.get_model_repository_index().models if m.state == "READY"}
    assert {"encoder", "digits.encoder", "classic28.sample"} <= names
    g.close()


def test_metrics_carry_the_model_label(servers):
    multi = servers["multi"]
    for m in MODELS:
        post(multi.url, "/sample", {"n": 2, "model": m})
    time.sleep(0.3)  # held-back observations are written within 0.1 s
    text = httpx.get(multi.url + "/metrics").text
    for m in MODELS:
        for series in (f'vae_requests_total{{endpoint="/sample",model="{m}",protocol="http",'
                       'status="200"}', f'vae_items_total{{endpoint="/sample",model="{m}",',
                       f'vae_batch_rows_count{{graph="decoder",model="{m}"}}',
                       f'vae_queue_wait_seconds_count{{graph="decoder",model="{m}"}}',
                       f'vae_request_duration_seconds_count{{endpoint="/sample",model="{m}"'):
            assert series in text, series


def test_models_added_and_removed_live_while_others_serve(servers, repo):
    """A folder that appears is served within the poll interval; one that disappears answers
    404 once retired, and no request to the models that stay fails meanwhile."""
    multi, spare, root = servers["multi"], repo["spare"], repo["repo"]
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                for m in MODELS:
                    r = c.post(multi.url + "/sample", json={"n": 4, "model": m})
                    if r.status_code != 200:
                        failures.append(f"{m} {r.status_code} {r.text}")

    background = threading.Thread(target=load)
    background.start()
    try:
        os.rename(spare / "extra", root / "extra")  # appears whole, as export publishes
        deadline = time.monotonic() + 60
        while post(multi.url, "/sample", {"n": 1, "model": "extra"}, None).status_code != 200:
            assert time.monotonic() < deadline, multi.output()
            time.sleep(0.1)
        info = post(multi.url, "/model", {"model": "extra"}).json()
        assert info["name"] == "extra" and "extra" in [m["name"] for m in info["models"]]
        assert httpx.get(multi.url + "/v2/models/extra.decoder/ready").status_code == 200
        seen: set[int] = set()
        os.rename(root / "extra", spare / "extra")  # the folder goes
        deadline = time.monotonic() + 60
        while True:
            code = post(multi.url, "/sample", {"n": 1, "model": "extra"}, None).status_code
            seen.add(code)
            if code == 404:
                break
            assert time.monotonic() < deadline, multi.output()
        assert seen <= {200, 404}, seen
    finally:
        stop.set()
        background.join()
    assert not failures, failures[:5]
    rows = httpx.post(multi.url + "/v2/repository/index", json={}).json()
    assert not any(r["name"].startswith("extra.") for r in rows)
    assert httpx.get(multi.url + "/readyz").status_code == 200


def test_a_named_broken_model_refuses_the_start(repo):
    srv = Server(repo["repo"], {"VAE_MODELS": "digits,broken"})
    try:
        assert srv.proc.wait(timeout=60) != 0
        out = srv.output()
        assert "refusing to start" in out and "broken" in out and "sha256" in out
    finally:
        srv.stop()


def test_the_python_client_and_command_name_models(servers):
    import asyncio
    import subprocess
    import sys

    from service.client import AsyncVAEClient, VAEClient
    from tests.conftest import ROOT

    url = servers["multi"].url
    with VAEClient(url, model="classic28") as vae:
        assert vae.sample(2, seed=0)["x"].shape == (2, 1, 28, 28)
        assert vae.sample(2, seed=0, model="digits")["x"].shape == (2, 1, 8, 8)
        assert vae.model()["name"] == "classic28"
        assert [m["name"] for m in vae.models()] == sorted(MODELS)
        x = vae.sample(3, seed=1)["x"]
        near = vae.neighbors(x, k=2)
        assert near["indices"].shape == (3, 2) and near["outputs"].shape == (3, 2, 1, 28, 28)
        assert np.allclose(vae.compare(x, x)["w2"], 0, atol=1e-6)

    async def together() -> np.ndarray:
        async with AsyncVAEClient(url, model="classic28") as avae:
            return (await avae.encode(x, samples=1, seed=2))["z"]

    with VAEClient(url) as vae:
        np.testing.assert_allclose(asyncio.run(together()),
                                   vae.encode(x, samples=1, seed=2, model="classic28")["z"])
    out = subprocess.run([sys.executable, "-m", "service.client", "models", "--url", url],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "classic28  versions [1]" in out.stdout and \
        "digits  versions [1]  (default)" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "service.client", "model", "--url", url,
                          "--model", "classic28"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert json.loads(out.stdout)["input"]["shape"] == [1, 28, 28]


def test_the_api_document_names_the_models(servers):
    def model_field(srv) -> dict:
        doc = httpx.get(srv.url + "/docs.json", timeout=10).json()
        return doc["components"]["schemas"]["Encode"]["properties"]["model"]

    fixed = model_field(servers["classic28"])  # names fixed by the settings: an enum
    assert fixed["anyOf"][0] == {"type": "string", "enum": ["classic28"]}
    live = model_field(servers["multi"])  # VAE_MODELS=*: any name of the rule
    assert live["anyOf"][0]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,62}$"
    page = httpx.get(servers["multi"].url + "/", timeout=10).text
    assert "ui/?model=classic28" in page and "ui/?model=digits" in page
