"""Exact nearest-neighbour search of posteriors over a model's reference set (reference.npz).

Each query and each reference item is a diagonal Gaussian N(mu, sigma^2). Measures, ranked best
first: `overlap` (Bhattacharyya: ranked by the distance D_B ascending, since the coefficient
exp(-D_B) underflows in many dimensions; the coefficient is the score), `kl` = KL(q_query ||
q_reference), `w2` (2-Wasserstein), `euclidean` (between the means). Everything in float64;
the search is a full scan in chunks of queries, exact and bounded in memory. For millions of
reference items a vector index takes this module's place (docs/DESIGN.md, "Neighbours at scale").
"""

from __future__ import annotations

import numpy as np

MEASURES = ("overlap", "kl", "w2", "euclidean")
CHUNK_ELEMENTS = 1 << 21  # query x reference x latent values held at once (D_B needs them)


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 for every pair, [n, m]."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def distances(mu: np.ndarray, logvar: np.ndarray, ref_mu: np.ndarray,
              ref_logvar: np.ndarray | None, measure: str) -> np.ndarray:
    """[n, m]: smaller is nearer, for every query and reference item."""
    mu, ref_mu = mu.astype(np.float64), ref_mu.astype(np.float64)
    if measure == "euclidean":
        return np.sqrt(_sq_dist(mu, ref_mu))
    lv, ref_lv = logvar.astype(np.float64), ref_logvar.astype(np.float64)
    var, ref_var = np.exp(lv), np.exp(ref_lv)
    if measure == "w2":
        return np.sqrt(_sq_dist(mu, ref_mu) + _sq_dist(np.exp(0.5 * lv), np.exp(0.5 * ref_lv)))
    if measure == "kl":  # 1/2 sum [lv_r - lv_q + (var_q + (mu_q - mu_r)^2) / var_r - 1]
        inv = 1.0 / ref_var
        quad = (mu * mu) @ inv.T - 2.0 * mu @ (ref_mu * inv).T + (ref_mu * ref_mu * inv).sum(1)
        return 0.5 * (ref_lv.sum(1)[None, :] - lv.sum(1)[:, None] + var @ inv.T + quad
                      - mu.shape[1])
    # overlap: D_B = sum (mu_q - mu_r)^2 / (8 s) + 1/2 sum [ln s - (lv_q + lv_r) / 2]
    out = np.empty((len(mu), len(ref_mu)))
    step = max(1, CHUNK_ELEMENTS // max(1, ref_mu.size))
    for i in range(0, len(mu), step):
        s = 0.5 * (var[i: i + step, None, :] + ref_var[None])
        d2 = (mu[i: i + step, None, :] - ref_mu[None]) ** 2
        out[i: i + step] = (d2 / (8.0 * s) + 0.5 * np.log(s)).sum(2) - 0.25 * (
            lv[i: i + step].sum(1)[:, None] + ref_lv.sum(1)[None, :])
    return out


def search(mu: np.ndarray, logvar: np.ndarray, ref_mu: np.ndarray,
           ref_logvar: np.ndarray | None, k: int, measure: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """-> (indices [n, k] into the reference set, scores [n, k]), best first; ties by index."""
    d = distances(mu, logvar, ref_mu, ref_logvar, measure)
    k = min(k, d.shape[1])
    part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else \
        np.tile(np.arange(d.shape[1]), (len(d), 1))
    rows = np.arange(len(d))[:, None]
    order = np.lexsort((part, d[rows, part]), axis=1)
    idx = part[rows, order]
    best = d[rows, idx]
    return idx, np.exp(-best) if measure == "overlap" else best
