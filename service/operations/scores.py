"""/score: -ELBO, the IWAE bound, the held-out percentile and calibrated outlier flags.

Two estimators of -ELBO = KL (closed form) - E_q[log p(x|z)]: `sigma_points` (the default)
replaces the draws by the unscented transform's 2Z points of q(z|x) (modelrepo/scoring.py), so
the same item always gets the same number, and its percentile does not move with the seed
(with 16 draws the same MNIST digit's percentile moved by up to 12.7 points across 8 seeds;
docs/MODEL_QUALITY.md); `sampled` averages over k draws of the seeded eps, as v1 did. The IWAE
bound always comes from k draws (it needs samples of q).

The percentile and the `fpr` threshold compare with the reference items' scores under the same
estimator (sampled: the same k, draws from seed 0), computed once per version and estimator
(in a thread, straight on the sessions) and kept with the version. A version exported without
its items falls back to the export's per-item -ELBO (one draw) for the percentile, and answers
404 to `fpr`."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from modelrepo import scoring
from service.errors import LimitExceeded, VersionNotFound
from service.runtime import latent, neighbors

ROWS_PER_RUN = 4096  # decoder rows per session run while scoring the reference items


def reference_scores(rt: Any, estimator: str, k: int) -> np.ndarray | None:
    """neg_elbo of every stored reference item under the estimator (sorted), cached on the
    version; None when the version stores no items. Synchronous: straight on the sessions."""
    key = (estimator, 0 if estimator == "sigma_points" else k)
    cache, ref = rt.reference_scores, rt.reference
    if key in cache:
        return cache[key]
    if ref is None or "x" not in ref:
        return None
    x, z_dim, out = ref["x"].astype(np.float32), rt.latent_dim, []
    n_draws = 2 * z_dim if estimator == "sigma_points" else k
    eps_all = None if estimator == "sigma_points" else latent.draw_eps(0, (k, len(x), z_dim))
    step = max(1, ROWS_PER_RUN // n_draws)

    def decode(z: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(rt.decoder_outputs, rt.run_decoder(z), strict=True))

    for i in range(0, len(x), step):
        xb = x[i:i + step]
        mu, logvar, _ = rt.encode_batch(xb)
        eps = scoring.sigma_point_eps(z_dim, len(xb)) if eps_all is None else \
            eps_all[:, i:i + step]
        out.append(scoring.score(xb, mu, logvar, eps, rt.manifest.likelihood, decode)[0])
    cache[key] = np.sort(np.concatenate(out))
    return cache[key]


def reference_w2(rt: Any) -> np.ndarray | None:
    """Each reference item's W2 distance to its nearest other reference item (sorted): what
    latent_w2 is for items like them, cached on the version; None without reference
    posteriors."""
    cache, ref = rt.reference_scores, rt.reference
    if "latent_w2" in cache:
        return cache["latent_w2"]
    if ref is None or "logvar" not in ref:
        return None
    d = neighbors.distances(ref["mu"], ref["logvar"], ref["mu"], ref["logvar"], "w2")
    np.fill_diagonal(d, np.inf)  # leave one out: an item is not its own neighbour
    cache["latent_w2"] = np.sort(d.min(axis=1))
    return cache["latent_w2"]


async def score(rt: Any, x: np.ndarray, r: Any, max_rows: int) -> dict[str, Any]:
    n, z_dim = len(x), rt.latent_dim
    rows = scoring.neg_elbo_rows(r.estimator, r.k, n, z_dim)
    if rows > max_rows:
        points = f" + {2 * z_dim} sigma points" if r.estimator == "sigma_points" else ""
        raise LimitExceeded(f"k: ({r.k} samples{points}) x {n} items = {rows} decoded rows "
                            f"exceed the limit of {max_rows} per request (VAE_MAX_SCORE_ROWS)")
    mu, logvar, _ = await rt.aencode(x)
    decoded: dict[str, dict] = {}

    async def draws(eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = scoring.posterior_samples(mu, logvar, eps)
        decoded["out"] = await rt.adecode_all(z.reshape(-1, z_dim))
        return scoring.score_decoded(x, mu, logvar, z, rt.manifest.likelihood, decoded["out"])

    neg_elbo, nll = await draws(latent.draw_eps(r.seed, (r.k, n, z_dim)))
    if r.estimator == "sigma_points":
        neg_elbo, _ = await draws(scoring.sigma_point_eps(z_dim, n))
    sampled_k1 = r.estimator == "sampled" and r.k == 1
    needs_ref = r.fpr is not None or not sampled_k1
    ref_scores = await asyncio.to_thread(reference_scores, rt, r.estimator, r.k) \
        if needs_ref else None
    ref = rt.reference
    if ref_scores is not None:
        pct = scoring.percentile(neg_elbo, ref_scores)
    else:  # the export's own per-item -ELBO (one draw), when no items are stored
        pct = None if ref is None else scoring.percentile(neg_elbo, ref["neg_elbo_sorted"])
    out = {"neg_elbo": neg_elbo, "nll_iwae": nll, "percentile": pct}
    w2_ref = reference_w2(rt)
    if w2_ref is not None:  # how far the item's posterior lies from every reference one
        out["latent_w2"] = neighbors.search(mu, logvar, ref["mu"], ref["logvar"], 1,
                                            "w2")[1][:, 0]
    if r.fpr is not None and r.flag_by == "latent_w2":
        if w2_ref is None:
            raise VersionNotFound(f"flag_by: version {rt.manifest.version} has no reference "
                                  "posteriors to measure latent distances against")
        threshold = float(np.quantile(w2_ref, 1.0 - r.fpr))
        out.update(threshold=threshold, is_outlier=out["latent_w2"] > threshold)
    elif r.fpr is not None:
        if ref_scores is None:
            raise VersionNotFound(f"fpr: version {rt.manifest.version} has no stored reference "
                                  "items to calibrate a threshold on (re-export it with its "
                                  "held-out items)")
        threshold = float(np.quantile(ref_scores, 1.0 - r.fpr))
        out.update(threshold=threshold, is_outlier=neg_elbo > threshold)
    return out
