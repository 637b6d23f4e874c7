"""Python client for the VAE service: numpy in, numpy out, sync (VAEClient) or asyncio
(AsyncVAEClient). Tensors travel as base64 .npy (lossless and the cheapest to parse).

    from service.client import VAEClient
    with VAEClient("http://127.0.0.1:3000") as vae:
        mu, sigma = vae.encode(images)["mu"], ...; x = vae.sample(16, seed=0)["x"]

CLI: python -m service.client sample --n 16 --out grid.png

Calls are retried when retrying is safe: connection errors (nothing was answered) and the
service's load answers 429 and 503 (it did no work). Waits grow exponentially with full
jitter, never shorter than the answer's Retry-After, and all attempts of one call share a
time budget (`retry_budget_s`); then the last error is raised. Every operation of the service
is idempotent for a given seed, so a retried call answers what the first would have.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np


class VAEError(Exception):
    def __init__(self, status: int, message: str, request_id: str | None = None,
                 retry_after: float | None = None):
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.request_id = status, message, request_id
        self.retry_after = retry_after


RETRY_STATUSES = (429, 503)


@dataclass
class Retry:
    """When and how long to retry one call."""

    budget_s: float = 30.0  # all attempts and waits of one call together
    base_s: float = 0.05  # the first wait's upper bound; doubles per attempt
    max_wait_s: float = 2.0
    max_attempts: int = 10

    def wait(self, attempt: int, retry_after: float | None, left: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if attempt + 1 >= self.max_attempts:
            return None
        wait = random.uniform(0, min(self.max_wait_s, self.base_s * 2 ** attempt))
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait if wait < left else None


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return max(0.0, float(resp.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def to_npy(arr: np.ndarray) -> dict[str, str]:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
    return {"npy": base64.b64encode(buf.getvalue()).decode("ascii")}


def from_field(value: Any) -> np.ndarray:
    if isinstance(value, dict) and "npy" in value:
        return np.load(io.BytesIO(base64.b64decode(value["npy"])), allow_pickle=False)
    return np.asarray(value, dtype=np.float32)


def request_headers(token: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    """Headers sent with every call: `extra` (e.g. a gateway's), and the bearer token of a
    service started with VAE_AUTH_TOKEN."""
    out = dict(extra or {})
    if token:
        out["Authorization"] = f"Bearer {token}"
    return out


def _clean(body: dict) -> dict:
    return {k: v for k, v in body.items() if v is not None}


class _Api:
    """Every endpoint once; `_post` is the only transport-specific part (returns the parsed
    value for the sync client, an awaitable of it for the async one)."""

    version: int | None
    model_name: str | None  # the served model to ask (None: the service's default)

    def _post(self, path: str, body: dict, parse: Any) -> Any:
        raise NotImplementedError

    def _body(self, model: str | None = None, **fields: Any) -> dict:
        return _clean({**fields, "model": model or self.model_name, "version": self.version})

    def encode(self, x: np.ndarray, samples: int = 0, seed: int | None = None,
               model: str | None = None) -> Any:
        body = self._body(model, inputs=to_npy(x), samples=samples, seed=seed)
        return self._post("/encode", body, lambda r: {k: np.asarray(v, np.float32)
                                                      for k, v in r.items()})

    def decode(self, z: np.ndarray, model: str | None = None) -> Any:
        body = self._body(model, z=to_npy(z), output_format="npy")
        return self._post("/decode", body, lambda r: from_field(r["outputs"]))

    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None,
               prior: str = "standard", labels: list[int] | None = None,
               like: np.ndarray | None = None, model: str | None = None) -> Any:
        """x and z; prior "aggregate" samples the data (labels: those classes; like: around
        these items) and adds `components`."""
        body = self._body(model, n=n, temperature=temperature, seed=seed, prior=prior,
                          labels=labels, like=None if like is None else to_npy(like),
                          output_format="npy")
        return self._post("/sample", body, lambda r: {
            "z": np.asarray(r["z"], np.float32), "x": from_field(r["outputs"]),
            **({"components": np.asarray(r["components"])} if "components" in r else {})})

    def interpolate(self, start: np.ndarray | None = None, end: np.ndarray | None = None,
                    start_z: np.ndarray | None = None, end_z: np.ndarray | None = None,
                    steps: int = 8, method: str = "lerp", model: str | None = None) -> Any:
        enc = lambda a: None if a is None else to_npy(a)  # noqa: E731
        body = self._body(model, start=enc(start), end=enc(end), start_z=enc(start_z),
                          end_z=enc(end_z), steps=steps, method=method, output_format="npy")
        return self._post("/interpolate", body, lambda r: {"z": np.asarray(r["z"], np.float32),
                                                           "x": from_field(r["outputs"])})

    def reconstruct(self, x: np.ndarray, sample: bool = False, seed: int | None = None,
                    model: str | None = None) -> Any:
        body = self._body(model, inputs=to_npy(x), sample=sample, seed=seed,
                          output_format="npy")
        return self._post("/reconstruct", body, lambda r: from_field(r["outputs"]))

    def score(self, x: np.ndarray, k: int = 1, seed: int | None = None,
              estimator: str | None = None, fpr: float | None = None,
              flag_by: str | None = None, model: str | None = None) -> Any:
        """neg_elbo, nll_iwae, percentile, latent_w2; with fpr also threshold and
        is_outlier."""
        body = self._body(model, inputs=to_npy(x), k=k, seed=seed, estimator=estimator,
                          fpr=fpr, flag_by=flag_by)
        return self._post("/score", body, lambda r: {k: None if v is None else np.asarray(v)
                                                     for k, v in r.items()})

    def compare(self, a: np.ndarray, b: np.ndarray, model: str | None = None) -> Any:
        """Per pair (a[i], b[i]): overlap, kl_ab, kl_ba, w2 of the two posteriors."""
        body = self._body(model, a=to_npy(a), b=to_npy(b))
        return self._post("/compare", body, lambda r: {k: np.asarray(v) for k, v in r.items()})

    def neighbors(self, x: np.ndarray, k: int = 5, measure: str | None = None,
                  model: str | None = None) -> Any:
        """The k nearest reference items of each item: indices, scores, labels, outputs."""
        body = self._body(model, inputs=to_npy(x), k=k, measure=measure, output_format="npy")
        return self._post("/neighbors", body, lambda r: {
            "indices": np.asarray(r["indices"]), "scores": np.asarray(r["scores"]),
            "labels": None if r["labels"] is None else np.asarray(r["labels"]),
            "outputs": from_field(r["outputs"]), "measure": r.get("measure")})

    def model(self, model: str | None = None) -> Any:
        """The (named or default) model's info, with `models`: every served name."""
        return self._post("/model", self._body(model), lambda r: r)

    def models(self) -> Any:
        """Every served model: [{"name", "versions", "default"}]."""
        return self._post("/model", self._body(), lambda r: r["models"])

    def latent_map(self, projection: str = "pca", with_mu: bool = False,
                   model: str | None = None) -> Any:
        """The reference set's 2-D map: points, labels, quality (and mu with with_mu)."""
        body = self._body(model, projection=projection, with_mu=with_mu)
        return self._post("/latent_map", body, lambda r: r)


def _parse(resp: httpx.Response, parse: Any) -> Any:
    if resp.status_code >= 400:
        try:
            message = resp.json().get("error", resp.text)
        except ValueError:
            message = resp.text
        raise VAEError(resp.status_code, message, resp.headers.get("x-request-id"),
                       _retry_after(resp))
    return parse(resp.json())


class _Attempts:
    """The attempts of one call: how long to wait after each failure, or re-raise it."""

    def __init__(self, retry: Retry):
        self.retry, self.start, self.n = retry, time.monotonic(), 0

    def wait_after(self, exc: Exception) -> float:
        if isinstance(exc, VAEError) and exc.status not in RETRY_STATUSES:
            raise exc  # the client's own error: the same request would fail again
        after = exc.retry_after if isinstance(exc, VAEError) else None
        left = self.retry.budget_s - (time.monotonic() - self.start)
        wait = self.retry.wait(self.n, after, left)
        if wait is None:
            raise exc
        self.n += 1
        return wait


class VAEClient(_Api):
    def __init__(self, url: str = "http://127.0.0.1:3000", timeout: float = 30.0,
                 version: int | None = None, retry: Retry | None = None,
                 model: str | None = None, token: str | None = None,
                 headers: dict[str, str] | None = None):
        self.version, self.model_name = version, model
        self.retry = retry or Retry()
        self.retries = 0  # waits taken so far, over all calls
        self.http = httpx.Client(base_url=url, timeout=timeout,
                                 headers=request_headers(token, headers))

    def _post(self, path: str, body: dict, parse: Any) -> Any:
        attempts = _Attempts(self.retry)
        while True:
            try:
                return _parse(self.http.post(path, json=body), parse)
            except (VAEError, httpx.TransportError) as exc:
                wait = attempts.wait_after(exc)
            self.retries += 1
            time.sleep(wait)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> VAEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncVAEClient(_Api):
    def __init__(self, url: str = "http://127.0.0.1:3000", timeout: float = 30.0,
                 version: int | None = None, retry: Retry | None = None,
                 model: str | None = None, token: str | None = None,
                 headers: dict[str, str] | None = None):
        self.version, self.model_name = version, model
        self.retry = retry or Retry()
        self.retries = 0
        self.http = httpx.AsyncClient(base_url=url, timeout=timeout,
                                      headers=request_headers(token, headers))

    async def _post(self, path: str, body: dict, parse: Any) -> Any:
        attempts = _Attempts(self.retry)
        while True:
            try:
                return _parse(await self.http.post(path, json=body), parse)
            except (VAEError, httpx.TransportError) as exc:
                wait = attempts.wait_after(exc)
            self.retries += 1
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncVAEClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


if __name__ == "__main__":  # `python -m service.client ...`: the command (client_cli.py)
    from service.client_cli import main

    sys.exit(main())
