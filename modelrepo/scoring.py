"""Log-likelihood estimates from the exported graphs' outputs, in numpy (no torch).

Shared by export (the held-out -ELBO of each graph variant) and the service (/score), so both
compute exactly the same estimator. Decoder outputs used: Bernoulli `logits`; Gaussian `x` (the
mean) and `x_logvar`.

Given eps [k, N, Z] and z = mu + sigma * eps:
- neg_elbo = KL(q || N(0, I)) in closed form + mean over k of -log p(x|z_k);
- nll_iwae = -(logsumexp_k log w_k - log k), log w = log p(x|z) + log p(z) - log q(z|x).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

LOG_2PI = math.log(2 * math.pi)


def kl_closed_form(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    return 0.5 * np.sum(np.exp(logvar) + mu**2 - logvar - 1.0, axis=-1)


def log_px(likelihood: str, x: np.ndarray, out: dict[str, np.ndarray]) -> np.ndarray:
    """log p(x|z) per row, summed over pixels; x and outputs [R, C, H, W]."""
    x = x.astype(np.float64).reshape(len(x), -1)
    if likelihood == "bernoulli":
        logits = out["logits"].astype(np.float64).reshape(len(x), -1)
        return np.sum(x * logits - np.logaddexp(0.0, logits), axis=1)
    mean = out["x"].astype(np.float64).reshape(len(x), -1)
    lv = out["x_logvar"].astype(np.float64).reshape(len(x), -1)
    return -0.5 * np.sum((x - mean) ** 2 * np.exp(-lv) + lv + LOG_2PI, axis=1)


def _log_normal(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    return -0.5 * np.sum((z - mu) ** 2 * np.exp(-logvar) + logvar + LOG_2PI, axis=-1)


def posterior_samples(mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """z [k, N, Z] = mu + sigma * eps, for eps [k, N, Z]."""
    return (mu[None] + np.exp(0.5 * logvar)[None] * eps).astype(np.float32)


def score(x: np.ndarray, mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray, likelihood: str,
          decode: Callable[[np.ndarray], dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """-> (neg_elbo [N], nll_iwae [N]) in nats; `decode` maps z [R, Z] to the decoder outputs."""
    z = posterior_samples(mu, logvar, eps)
    return score_decoded(x, mu, logvar, z, likelihood, decode(z.reshape(-1, z.shape[-1])))


def score_decoded(x: np.ndarray, mu: np.ndarray, logvar: np.ndarray, z: np.ndarray,
                  likelihood: str, out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The estimates from z [k, N, Z] and the decoder outputs for z flattened to [k * N, Z]."""
    k, n, _ = z.shape
    mu64, lv64 = mu.astype(np.float64), logvar.astype(np.float64)
    xs = np.broadcast_to(x[None], (k, *x.shape)).reshape(k * n, *x.shape[1:])
    lpx = log_px(likelihood, xs, out).reshape(k, n)
    z64 = z.astype(np.float64)
    log_w = lpx + _log_normal(z64, 0.0, 0.0) - _log_normal(z64, mu64[None], lv64[None])
    neg_elbo = kl_closed_form(mu64, lv64) - lpx.mean(axis=0)
    m = log_w.max(axis=0)
    nll_iwae = -(m + np.log(np.exp(log_w - m).sum(axis=0)) - math.log(k))
    return neg_elbo, nll_iwae


def percentile(values: np.ndarray, sorted_reference: np.ndarray) -> np.ndarray:
    """Share (in %) of the reference items whose -ELBO is lower than each value."""
    return 100.0 * np.searchsorted(sorted_reference, values, side="left") / len(sorted_reference)
