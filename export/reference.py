"""What the service needs from the training data, computed once at export on the held-out split.

reference.npz (numeric arrays only, loaded with allow_pickle=False):
- mu [M, Z] and logvar [M, Z]: the posteriors of up to 2,000 held-out items, labels [M] when
  known, and the items themselves, x [M, *S] float32 (for /neighbors),
- points [M, 2]: their 2-D projection for /latent_map, with proj_mean [Z] and proj_components
  [2, Z] (PCA; points = (mu - proj_mean) @ proj_components.T) so new codes can be placed too,
  and points_tsne [M, 2] (t-SNE of mu, scikit-learn; not invertible),
- neg_elbo_sorted [H]: per-item held-out -ELBO (closed-form KL + one seeded z sample, the same
  estimator as /score with k = 1), sorted, for /score's percentile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.evaluate import encode_posterior, knn_loo_accuracy, per_item_terms
from training.model import VAE

MAX_REFERENCE = 2000
QUANTILES = np.linspace(0.0, 1.0, 101)


def per_item_neg_elbo(model: VAE, x: torch.Tensor, seed: int = 0) -> np.ndarray:
    rec, kl = per_item_terms(model, x, seed=seed, batch=500)
    return (rec + kl).numpy().astype(np.float64)


def pca_2d(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (points [M, 2], mean [Z], components [2, Z]); Z < 2 is padded with a zero axis."""
    mean = mu.mean(axis=0)
    _, _, vt = np.linalg.svd(mu - mean, full_matrices=False)
    comps = np.zeros((2, mu.shape[1]))
    comps[: min(2, len(vt))] = vt[:2]
    # a fixed sign per axis, so the same model always draws the same map
    signs = np.where(comps[np.arange(2), np.abs(comps).argmax(axis=1)] < 0, -1.0, 1.0)
    comps *= signs[:, None]
    return (mu - mean) @ comps.T, mean, comps


def tsne_2d(mu: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(mu) - 1) / 3)))
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed,
                n_jobs=1).fit_transform(mu.astype(np.float64))


def map_quality(points: np.ndarray, labels: np.ndarray | None) -> dict:
    """How well a 2-D map separates the labels: silhouette, and leave-one-out 5-NN accuracy."""
    if labels is None or len(np.unique(labels)) < 2:
        return {"silhouette": None, "knn5_accuracy": None}
    from sklearn.metrics import silhouette_score

    return {"silhouette": float(silhouette_score(points, labels)),
            "knn5_accuracy": knn_loo_accuracy(points, labels)}


@torch.no_grad()
def write_reference(model: VAE, x_held: np.ndarray, labels: np.ndarray | None,
                    path: Path) -> dict:
    """Write reference.npz; return the manifest's `reference` and `score` sections."""
    x = torch.from_numpy(np.ascontiguousarray(x_held, dtype=np.float32))
    neg_elbo = per_item_neg_elbo(model, x)
    ref_x = x[:MAX_REFERENCE]
    mu, logvar = (a.astype(np.float32) for a in encode_posterior(model, ref_x))
    points, mean, comps = pca_2d(mu.astype(np.float64))
    tsne = tsne_2d(mu)
    ref_labels = None if labels is None else labels[:MAX_REFERENCE].astype(np.int64)
    arrays = {"mu": mu, "logvar": logvar, "x": ref_x.numpy().astype(np.float32),
              "points": points.astype(np.float32), "points_tsne": tsne.astype(np.float32),
              "proj_mean": mean.astype(np.float32), "proj_components": comps.astype(np.float32),
              "neg_elbo_sorted": np.sort(neg_elbo)}
    if labels is not None:
        arrays["labels"] = labels[:MAX_REFERENCE].astype(np.int64)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    reference = {"file": path.name, "items": int(len(mu)), "projection": "pca",
                 "has_labels": labels is not None, "has_logvar": True, "has_images": True,
                 "projections": ["pca", "tsne"],
                 "quality": {"pca": map_quality(points, ref_labels),
                             "tsne": map_quality(tsne, ref_labels)}}
    score = {"heldout_items": int(len(neg_elbo)),
             "estimator": "closed-form KL + one seeded z sample (the k = 1 /score estimator)",
             "quantiles": [float(v) for v in np.quantile(neg_elbo, QUANTILES)]}
    return {"reference": reference, "score": score}
