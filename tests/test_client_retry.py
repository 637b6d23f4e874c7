"""The Python client retries what is safe to retry (connection errors, 429, 503) with bounded,
jittered backoff that honours Retry-After within a time budget: against the real server under
overload, and its policy against scripted answers."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from service.client import AsyncVAEClient, Retry, VAEClient, VAEError
from tests.conftest import Server, free_port


def test_overloaded_server_answers_every_call_after_retries(trained):
    """VAE_MAX_CONCURRENCY=2 and a 40 ms batch window: 24 concurrent calls overflow the
    limit (429 with Retry-After); the client waits and retries until each is answered, and
    the answers equal the same requests made one at a time."""
    env = {"VAE_MAX_CONCURRENCY": "2", "VAE_BATCH_MAX_WAIT_MS": "40"}
    with Server(trained["repository"], env) as srv:
        raw = [httpx.AsyncClient(base_url=srv.url, timeout=30) for _ in range(2)]

        async def without_retries():  # the overload is real: some calls are refused
            async def one(i):
                return (await raw[i % 2].post("/sample", json={"n": 1, "seed": i})).status_code
            return await asyncio.gather(*[one(i) for i in range(24)])

        async def with_retries(vae):
            return await asyncio.gather(*[vae.sample(1, seed=i) for i in range(24)])

        async def run():
            statuses = await without_retries()
            for c in raw:
                await c.aclose()
            async with AsyncVAEClient(srv.url, retry=Retry(budget_s=30)) as vae:
                return statuses, await with_retries(vae), vae.retries

        statuses, answers, retries = asyncio.run(run())
        assert 429 in statuses and 200 in statuses, statuses
        assert retries > 0
        with VAEClient(srv.url) as vae:
            for i in (0, 7, 23):
                np.testing.assert_array_equal(answers[i]["z"], vae.sample(1, seed=i)["z"])


def _scripted(answers: list) -> httpx.MockTransport:
    """Answers in order: an int status (with Retry-After 0.2 for 429/503) or an exception."""
    script = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        step = next(script)
        if isinstance(step, Exception):
            raise step
        if step == 200:
            return httpx.Response(200, json={"name": "m"})
        headers = {"retry-after": "0.2"} if step in (429, 503) else {}
        return httpx.Response(step, json={"error": "busy"}, headers=headers)
    return httpx.MockTransport(handler)


def _client(answers: list, retry: Retry) -> VAEClient:
    vae = VAEClient("http://vae.test", retry=retry)
    vae.http = httpx.Client(base_url="http://vae.test", transport=_scripted(answers))
    return vae


def test_retry_after_is_honoured_and_client_errors_are_not_retried():
    vae = _client([429, 503, 200], Retry(budget_s=5))
    t0 = time.monotonic()
    assert vae.model() == {"name": "m"}
    assert vae.retries == 2 and time.monotonic() - t0 >= 0.4  # two Retry-After: 0.2
    vae = _client([400, 200], Retry())
    with pytest.raises(VAEError) as info:
        vae.model()
    assert info.value.status == 400 and vae.retries == 0
    vae = _client([httpx.ConnectError("refused"), 200], Retry(base_s=0.01))
    assert vae.model() == {"name": "m"} and vae.retries == 1


def test_the_budget_bounds_every_call():
    vae = _client([503] * 50, Retry(budget_s=0.5))
    t0 = time.monotonic()
    with pytest.raises(VAEError) as info:
        vae.model()
    assert info.value.status == 503 and time.monotonic() - t0 < 1.0
    nobody = VAEClient(f"http://127.0.0.1:{free_port()}", retry=Retry(budget_s=0.3, base_s=0.05))
    with pytest.raises(httpx.ConnectError):
        nobody.model()
    assert nobody.retries >= 1


def test_backoff_grows_with_jitter_and_stops():
    r = Retry(base_s=0.1, max_wait_s=1.0, max_attempts=4)
    waits = [r.wait(a, None, 100.0) for a in range(3)]
    assert all(0 <= w <= min(1.0, 0.1 * 2 ** a) for a, w in enumerate(waits))
    assert r.wait(3, None, 100.0) is None  # the fourth attempt was the last
    assert r.wait(0, 2.5, 100.0) == 2.5  # Retry-After is a floor
    assert r.wait(0, 2.5, 1.0) is None  # beyond the budget: give up now


def test_every_operation_has_a_client_method_with_the_same_parameters():
    """A new operation (or request field) without its client method fails here: the sync and
    async clients share every method (service/client.py's _Api)."""
    import inspect

    from service.client import _Api
    from service.operations.api import OPERATIONS

    skip = {"version", "output_format"}  # the client's own setting; always npy
    renamed = {"inputs": "x"}  # the client's names for the same fields
    for op in OPERATIONS.values():
        method = getattr(_Api, op.name, None)
        assert method is not None, f"service/client.py has no method for {op.route}"
        params = set(inspect.signature(method).parameters) - {"self"}
        for field in set(op.request.model_fields) - skip:
            name = renamed.get(field, field)
            assert name is None or name in params, f"{op.name}: no parameter for {field}"
