"""Calibrated outlier flags (the contract's v1.2 `/score` with `fpr`): the threshold is the
1 - fpr quantile (numpy.quantile's default method) of the version's reference items' scores,
computed with the estimator the answer's neg_elbo uses (the same k; draws from seed 0, fixed,
so one version and k always give one threshold). Computed on first use per (version, k) and
kept with the version."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelrepo import scoring
from service.errors import VersionNotFound
from service.runtime import latent

ROWS_PER_RUN = 4096  # decoder rows per step: within any VAE_MAX_QUEUE_ROWS a service accepts


async def reference_scores(rt: Any, k: int) -> np.ndarray:
    """neg_elbo of every reference item with k draws (seed 0), cached on the version."""
    cache = rt.reference_scores
    if k in cache:
        return cache[k]
    ref, v = rt.reference, rt.manifest.version
    if ref is None or "x" not in ref:
        raise VersionNotFound(f"fpr: version {v} has no stored reference items to calibrate "
                              "a threshold on (re-export it with its held-out items)")
    x, z_dim = ref["x"].astype(np.float32), rt.latent_dim
    eps_all = latent.draw_eps(0, (k, len(x), z_dim))
    step = max(1, ROWS_PER_RUN // k)
    out = []
    for i in range(0, len(x), step):
        xb = x[i:i + step]
        mu, logvar, _ = await rt.aencode(xb)
        z = scoring.posterior_samples(mu, logvar, eps_all[:, i:i + step])
        decoded = await rt.adecode_all(z.reshape(-1, z_dim))
        out.append(scoring.score_decoded(xb, mu, logvar, z, rt.manifest.likelihood,
                                         decoded)[0])
    cache[k] = np.concatenate(out)
    return cache[k]


async def flags(rt: Any, k: int, fpr: float, neg_elbo: np.ndarray) -> dict[str, Any]:
    """`threshold` and `is_outlier` [N] for the answer."""
    threshold = float(np.quantile(await reference_scores(rt, k), 1.0 - fpr))
    return {"threshold": threshold, "is_outlier": neg_elbo > threshold}
