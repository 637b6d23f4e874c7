"""Operations on the latent space, in numpy, following the contract's randomness rules exactly.

eps = numpy.random.default_rng(seed).standard_normal(shape) in float64, cast to float32, in one
call per request; without a seed the draw is fresh. Everything here is deterministic given eps,
so HTTP, V2 and gRPC answers agree bit for bit.
"""

from __future__ import annotations

import numpy as np


def draw_eps(seed: int | None, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def sigma_of(logvar: np.ndarray) -> np.ndarray:
    return np.exp(0.5 * logvar)


def sample_mixture(mu: np.ndarray, sigma: np.ndarray, n: int, temperature: float,
                   seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """n draws from the mixture (1/M) sum_i N(mu_i, sigma_i^2) of M posteriors, exactly as the
    contract says: rng = default_rng(seed); i = rng.integers(0, M, n);
    eps = rng.standard_normal((n, Z)); z = mu[i] + T * sigma[i] * eps in float32. -> (z, i)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(mu), n)
    eps = rng.standard_normal((n, mu.shape[1])).astype(np.float32)
    z = mu[i].astype(np.float32) + np.float32(temperature) * sigma[i].astype(np.float32) * eps
    return z.astype(np.float32), i


def sample_posterior(mu: np.ndarray, sigma: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """z = mu + sigma * eps, broadcasting eps [N, Z] or [N, S, Z] (samples on axis 1); sigma
    as the encoder's batch computed it (ModelRuntime.aencode)."""
    if eps.ndim == 3:
        return mu[:, None, :] + sigma[:, None, :] * eps
    return mu + sigma * eps


def interpolate(a: np.ndarray, b: np.ndarray, steps: int, method: str) -> np.ndarray:
    """Paths [P, steps, Z] from a [P, Z] to b [P, Z]; the first and last steps are a and b."""
    t = np.linspace(0.0, 1.0, steps)[None, :, None]  # [1, steps, 1]
    a64, b64 = a.astype(np.float64)[:, None, :], b.astype(np.float64)[:, None, :]
    if method == "lerp":
        path = (1.0 - t) * a64 + t * b64
    elif method == "slerp":
        path = _slerp(a64, b64, t)
    else:
        raise ValueError(f"unknown interpolation method {method!r}")
    path = path.astype(np.float32)
    path[:, 0], path[:, -1] = a, b  # exact endpoints, whatever the rounding
    return path


def _slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake; White 2016 for VAE latents); lerp where the two
    vectors are (anti)parallel or zero, where the great circle is undefined."""
    na, nb = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
    safe = (na > 1e-12) & (nb > 1e-12)
    cos = np.clip(np.sum(a * b, axis=-1, keepdims=True) / np.where(safe, na * nb, 1.0), -1, 1)
    omega = np.arccos(cos)
    so = np.sin(omega)
    ok = safe & (np.abs(so) > 1e-6)
    so_safe = np.where(ok, so, 1.0)
    spherical = (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / so_safe
    linear = (1.0 - t) * a + t * b
    return np.where(ok, spherical, linear)

