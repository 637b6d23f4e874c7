"""Log-likelihood estimates from the exported graphs' outputs, in numpy (no torch).

Shared by export (the held-out -ELBO of each graph variant) and the service (/score), so both
compute exactly the same estimator; and the closed-form divergences between two diagonal
Gaussian posteriors (the service's /compare, training's class-overlap figures). Decoder
outputs used: Bernoulli `logits`; Gaussian `x` (the mean) and `x_logvar`.

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
    # -mean(log w) over the same draws: so nll_iwae <= neg_elbo always (Jensen), and with one
    # draw the two are equal. Over sigma points (sigma_point_eps) it is KL in closed form minus
    # the points' mean log p(x|z): log p(z) - log q(z) is quadratic in z, which they integrate
    # exactly.
    neg_elbo = -log_w.mean(axis=0)
    m = log_w.max(axis=0)
    nll_iwae = -(m + np.log(np.exp(log_w - m).sum(axis=0)) - math.log(k))
    return neg_elbo, nll_iwae


ESTIMATORS = ("sigma_points", "sampled")


def sigma_point_eps(z_dim: int, n: int) -> np.ndarray:
    """eps [2Z, n, Z]: +-sqrt(Z) along each latent axis. z = mu + sigma * eps are the unscented
    transform's points of N(mu, sigma^2) (equal weights): their mean and covariance are the
    posterior's, so the mean of log p(x|z) over them estimates E_q[log p(x|z)] with no draw at
    all (exactly when log p(x|z) is quadratic in z). Measured against 1,000 draws it is closer
    than 16 draws are (docs/MODEL_QUALITY.md), and the same item always gets the same number."""
    eye = np.sqrt(z_dim) * np.eye(z_dim, dtype=np.float32)
    pts = np.concatenate([eye, -eye])
    return np.ascontiguousarray(np.broadcast_to(pts[:, None, :], (2 * z_dim, n, z_dim)))


def neg_elbo_rows(estimator: str, k: int, n: int, z_dim: int) -> int:
    """Decoder rows a score of n items costs: k draws, plus 2Z points for sigma_points."""
    return n * (k + (2 * z_dim if estimator == "sigma_points" else 0))


def percentile(values: np.ndarray, sorted_reference: np.ndarray) -> np.ndarray:
    """Share (in %) of the reference items whose -ELBO is lower than each value."""
    return 100.0 * np.searchsorted(sorted_reference, values, side="left") / len(sorted_reference)


def gaussian_divergences(mu_a: np.ndarray, logvar_a: np.ndarray, mu_b: np.ndarray,
                         logvar_b: np.ndarray) -> dict[str, np.ndarray]:
    """Per pair of diagonal Gaussians q_a = N(mu_a, sigma_a^2), q_b = N(mu_b, sigma_b^2)
    ([N, Z] each), summed over Z, in float64: the Bhattacharyya coefficient `overlap` =
    exp(-D_B), D_B = sum (mu_a-mu_b)^2 / (8 s) + 1/2 sum ln(s / (sigma_a sigma_b)),
    s = (sigma_a^2 + sigma_b^2) / 2; `kl_ab` = KL(q_a || q_b), `kl_ba`; and the 2-Wasserstein
    distance `w2` = sqrt(sum (mu_a-mu_b)^2 + sum (sigma_a-sigma_b)^2). Also `bhattacharyya`
    = D_B itself, which does not underflow where the coefficient does."""
    ma, la, mb, lb = (np.asarray(v, np.float64) for v in (mu_a, logvar_a, mu_b, logvar_b))
    va, vb = np.exp(la), np.exp(lb)
    d2 = (ma - mb) ** 2
    s = 0.5 * (va + vb)
    # ln(s / (sigma_a sigma_b)) = ln s - (logvar_a + logvar_b) / 2: no sqrt, no underflow
    # D_B and both KLs are >= 0 exactly; rounding must not print -6.8e-17 for identical inputs
    d_b = np.maximum(np.sum(d2 / (8.0 * s) + 0.5 * (np.log(s) - 0.5 * (la + lb)), axis=-1), 0)
    kl_ab = np.maximum(0.5 * np.sum(lb - la + (va + d2) / vb - 1.0, axis=-1), 0)
    kl_ba = np.maximum(0.5 * np.sum(la - lb + (vb + d2) / va - 1.0, axis=-1), 0)
    w2 = np.sqrt(np.sum(d2 + (np.exp(0.5 * la) - np.exp(0.5 * lb)) ** 2, axis=-1))
    return {"overlap": np.exp(-d_b), "bhattacharyya": d_b, "kl_ab": kl_ab, "kl_ba": kl_ba,
            "w2": w2}
