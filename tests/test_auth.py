"""Bearer-token authentication on every door: HTTP API, V2 REST (tritonclient.http) and gRPC
(tritonclient.grpc metadata); health and metrics stay public by default."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from service.config import Settings
from service.lifecycle.auth import BearerAuth
from tests.conftest import Server

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN + "\n")  # a mounted secret often ends with a newline
    with Server(trained["repository"], {"VAE_AUTH_TOKEN_FILE": str(token_file)}) as srv:
        yield srv


def _n(mod):
    n = mod.InferInput("n", [1], "INT32")
    n.set_data_from_numpy(np.array([1], np.int32))
    return n


def test_http_api_needs_the_token(server):
    r = httpx.post(server.url + "/sample", json={"n": 1})
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.post(server.url + "/sample", json={"n": 1},
                   headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert r.status_code == 401
    r = httpx.post(server.url + "/sample", json={"n": 1},
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and len(r.json()["z"]) == 1
    for path in ("/livez", "/readyz", "/metrics", "/v2/health/ready"):
        assert httpx.get(server.url + path).status_code == 200, path
    # the pages hold no data: public while the explorer is (docs/SECURITY.md)
    for path in ("/ui/", "/ui/explorer.js", "/", "/docs", "/docs.json",
                 "/static_content/swagger-ui.css"):
        assert httpx.get(server.url + path).status_code == 200, path
    assert httpx.get(server.url + "/ui/../encode").status_code in (401, 404, 405)
    assert 'reason="unauthorized"' in httpx.get(server.url + "/metrics").text


def test_v2_rest_and_grpc_need_the_token(server):
    h = th.InferenceServerClient(server.url.removeprefix("http://"))
    g = tg.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        h.infer("sample", [_n(th)])
    assert info.value.status() == "401"
    with pytest.raises(InferenceServerException) as info:
        g.infer("sample", [_n(tg)])
    assert info.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException):
        g.get_model_metadata("sample")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert h.infer("sample", [_n(th)], headers=auth).as_numpy("z").shape[0] == 1
    assert g.infer("sample", [_n(tg)], headers={"authorization": f"Bearer {TOKEN}"}) \
        .as_numpy("z").shape[0] == 1
    assert h.is_server_live() and g.is_server_ready()  # health stays public
    h.close()
    g.close()


def test_auth_settings(tmp_path):
    assert BearerAuth.from_settings(Settings()) is None
    with pytest.raises(SystemExit, match="at least 16"):
        BearerAuth.from_settings(Settings(auth_token="short"))
    with pytest.raises(SystemExit, match="one, not both"):
        BearerAuth.from_settings(Settings(auth_token=TOKEN, auth_token_file="x"))
    with pytest.raises(SystemExit, match="VAE_AUTH_TOKEN_FILE"):
        BearerAuth.from_settings(Settings(auth_token_file=str(tmp_path / "missing")))
    auth = BearerAuth.from_settings(Settings(auth_token=TOKEN, auth_public_paths="/livez"))
    assert auth.allows("/livez", None) and not auth.allows("/readyz", None)
    for page in ("/", "/docs", "/docs.json", "/static_content/index.css"):  # no explorer:
        assert not auth.allows(page, None), page                           # no pages either
    auth = BearerAuth.from_settings(Settings(auth_token=TOKEN, auth_public_paths="/ui,/ui/*"))
    assert auth.allows("/ui", None) and auth.allows("/ui/api.js", None)
    assert auth.allows("/docs", None) and auth.allows("/static_content/index.css", None)
    assert not auth.allows("/uix", None) and not auth.allows("/ui/../encode", None)
    assert auth.allows("/encode", f"Bearer {TOKEN}") and not auth.allows("/encode", TOKEN)


def test_the_python_client_sends_the_token(server):
    import asyncio

    from service.client import AsyncVAEClient, VAEClient, VAEError

    with VAEClient(server.url, token=TOKEN, headers={"X-Request-ID": "client-1"}) as vae:
        assert vae.sample(2, seed=0)["x"].shape[0] == 2
    with VAEClient(server.url) as anonymous, pytest.raises(VAEError) as info:
        anonymous.sample(1)
    assert info.value.status == 401

    async def with_token() -> int:
        async with AsyncVAEClient(server.url, token=TOKEN) as avae:
            return len((await avae.sample(3, seed=0))["z"])

    assert asyncio.run(with_token()) == 3
