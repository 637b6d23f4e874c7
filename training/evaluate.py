"""Held-out evaluation of a trained VAE, written to metrics.json beside the checkpoint.

- neg_elbo, recon, kl: single-sample -ELBO terms (beta = 1), nats per item, fixed eps seed.
- nll_iwae: the importance-weighted bound (Burda et al. 2016) with k samples,
  -log (1/k) sum_k p(x|z_k) p(z_k) / q(z_k|x); it is <= -ELBO and tightens as k grows.
- active_units: units u with Cov_x(E_q[z_u]) = Var over items of mu_u > 0.01 (Burda et al.).
- knn_accuracy: 5 nearest training mu (Euclidean) vote the label of each held-out mu.
- interp_smoothness: decode lerp paths (16 steps) between held-out pairs; per path, the largest
  step between consecutive decoded images divided by the path's total length, averaged. An even
  path scores 1/15 = 0.067; a path that jumps at one step scores near 1. Lower is smoother.
- with the feature network (training/features.py): fid_samples and fid_recon, Frechet distances
  in its embedding between the held-out images and as many decoder samples (the mean of p(x|z),
  z ~ N(0, I)) or reconstructions (decoded mu); fid_data, the same between training and held-out
  images (the floor set by the data itself); edge_ratio_recon and edge_ratio_samples, mean
  gradient magnitude of those images / that of the held-out images (1 = as sharp as the data).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from training.features import FeatureNet, edge_magnitude, embeddings, frechet_distance
from training.model import VAE, kl_divergence

LOG_2PI = math.log(2 * math.pi)


def _gauss_logpdf(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (((z - mu) ** 2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


@torch.no_grad()
def encode_posterior(model: VAE, x: torch.Tensor, batch: int = 1000
                     ) -> tuple[np.ndarray, np.ndarray]:
    """mu and logvar of q(z|x) for every row of x, in batches; numpy."""
    posts = [model.encode(x[i: i + batch]) for i in range(0, len(x), batch)]
    return (torch.cat([m for m, _ in posts]).numpy(), torch.cat([v for _, v in posts]).numpy())


def knn_loo_accuracy(points: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN label accuracy among the points themselves (ties: smaller label)."""
    d = torch.cdist(torch.from_numpy(np.asarray(points, np.float64)),
                    torch.from_numpy(np.asarray(points, np.float64)))
    d.fill_diagonal_(float("inf"))
    votes = labels[d.topk(k, largest=False).indices.numpy()]
    pred = np.array([np.bincount(v, minlength=labels.max() + 1).argmax() for v in votes])
    return float((pred == labels).mean())


@torch.no_grad()
def encode_mu(model: VAE, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model.encode(x[i : i + batch])[0] for i in range(0, len(x), batch)])


@torch.no_grad()
def per_item_terms(model: VAE, x: torch.Tensor, seed: int = 1234,
                   batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item: -log p(x|z) for one seeded z ~ q(z|x), and the closed-form KL; nats."""
    gen = torch.Generator().manual_seed(seed)
    recs, kls = [], []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        mu, logvar = model.encode(xb)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
        recs.append(model.recon_nll(model.decode_logits(z), xb))
        kls.append(kl_divergence(mu, logvar))
    return torch.cat(recs), torch.cat(kls)


def elbo_terms(model: VAE, x: torch.Tensor, seed: int = 1234,
               batch: int = 1000) -> dict[str, float]:
    rec, kl = (t.mean().item() for t in per_item_terms(model, x, seed, batch))
    return {"neg_elbo": rec + kl, "recon": rec, "kl": kl}


@torch.no_grad()
def iwae_nll(model: VAE, x: torch.Tensor, k: int = 100, seed: int = 4321,
             chunk: int = 64) -> np.ndarray:
    """Per-item IWAE estimate of -log p(x), nats; computed in chunks of items to bound memory."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(x), chunk):
        xb = x[i : i + chunk]
        mu, logvar = model.encode(xb)
        eps = torch.randn((k, *mu.shape), generator=gen)
        z = mu + torch.exp(0.5 * logvar) * eps  # [k, n, Z]
        dec = model.decode_logits(z.reshape(-1, mu.shape[1]))
        log_px = -model.recon_nll(dec, xb.repeat(k, *[1] * (xb.dim() - 1))).view(k, -1)
        log_pz = _gauss_logpdf(z, torch.zeros_like(z), torch.zeros_like(z))
        log_qz = _gauss_logpdf(z, mu, logvar)
        log_w = log_px + log_pz - log_qz
        out.append(-(torch.logsumexp(log_w, dim=0) - math.log(k)))
    return torch.cat(out).numpy()


def active_units(mu: np.ndarray, threshold: float = 0.01) -> int:
    return int((mu.var(axis=0) > threshold).sum())


def knn_accuracy(train_mu: np.ndarray, train_y: np.ndarray, test_mu: np.ndarray,
                 test_y: np.ndarray, k: int = 5) -> float:
    """Majority vote of the k nearest training mu (ties: the smaller label)."""
    d = torch.cdist(torch.from_numpy(test_mu), torch.from_numpy(train_mu))
    nearest = d.topk(k, largest=False).indices.numpy()
    votes = train_y[nearest]
    pred = np.array([np.bincount(v).argmax() for v in votes])
    return float((pred == test_y).mean())


@torch.no_grad()
def interpolation_smoothness(model: VAE, mu: torch.Tensor, pairs: int = 100, steps: int = 16,
                             seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    a = mu[rng.integers(0, len(mu), pairs)]
    b = mu[rng.integers(0, len(mu), pairs)]
    t = torch.linspace(0, 1, steps)[None, :, None]
    path = (1 - t) * a[:, None] + t * b[:, None]  # [P, steps, Z]
    imgs = model.decode(path.reshape(-1, mu.shape[1])).reshape(pairs, steps, -1)
    step_len = (imgs[:, 1:] - imgs[:, :-1]).norm(dim=-1)  # [P, steps - 1]
    total = step_len.sum(dim=1).clamp_min(1e-12)
    return float((step_len.max(dim=1).values / total).mean())


@torch.no_grad()
def sharpness_metrics(model: VAE, fnet: FeatureNet, x_train: torch.Tensor,
                      x_held: torch.Tensor, mu_held: torch.Tensor,
                      seed: int = 0) -> dict[str, float]:
    """mu_held: the held-out items' posterior means, which evaluate_all has already."""
    n = len(x_held)
    gen = torch.Generator().manual_seed(seed)
    samples = model.decode(torch.randn(n, model.cfg.latent_dim, generator=gen))
    recon = model.decode(mu_held)
    held_emb = embeddings(fnet, x_held)
    edge_held = max(edge_magnitude(x_held), 1e-12)
    return {
        "fid_samples": frechet_distance(held_emb, embeddings(fnet, samples)),
        "fid_recon": frechet_distance(held_emb, embeddings(fnet, recon)),
        "fid_data": frechet_distance(held_emb, embeddings(fnet, x_train[:n])),
        "edge_ratio_recon": edge_magnitude(recon) / edge_held,
        "edge_ratio_samples": edge_magnitude(samples) / edge_held,
    }


SNAPSHOT_ITEMS = 500  # held-out items whose mu the checkpoint keeps at six epochs


@torch.no_grad()
def organization(model: VAE, x: torch.Tensor, labels: np.ndarray | None
                 ) -> tuple[dict, np.ndarray]:
    """How organized the latent space is now, on held-out items (cheap enough for every
    evaluation): active units, mean sigma, KL per dimension, and with labels the
    leave-one-out 5-NN accuracy on mu and the silhouette of mu by label. -> (figures, mu of
    the first SNAPSHOT_ITEMS items, for the map snapshots)."""
    mu, lv = encode_posterior(model, x)
    out = {"active_units": active_units(mu), "mean_sigma": float(np.exp(0.5 * lv).mean()),
           "kl_per_dim": [float(v) for v in
                          (0.5 * (np.exp(lv) + mu ** 2 - lv - 1)).mean(axis=0)]}
    if labels is not None and len(np.unique(labels)) > 1:
        from sklearn.metrics import silhouette_score

        out["knn5_heldout"] = knn_loo_accuracy(mu, labels)
        out["silhouette"] = float(silhouette_score(mu, labels))
    return out, mu[:SNAPSHOT_ITEMS].copy()


@torch.no_grad()
def class_overlap(model: VAE, x: torch.Tensor, labels: np.ndarray, pairs: int = 20000,
                  seed: int = 0) -> dict[str, float]:
    """How much the posteriors of same-class pairs overlap compared with different-class
    pairs (random pairs of distinct items): mean Bhattacharyya coefficient and mean
    Bhattacharyya distance D_B (the coefficient underflows in many dimensions)."""
    from modelrepo.scoring import gaussian_divergences

    mu, lv = encode_posterior(model, x)
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(x), (2, pairs))
    keep = i != j
    i, j = i[keep], j[keep]
    d = gaussian_divergences(mu[i], lv[i], mu[j], lv[j])
    same = labels[i] == labels[j]
    return {"overlap_same_class": float(d["overlap"][same].mean()),
            "overlap_other_class": float(d["overlap"][~same].mean()),
            "bhattacharyya_same_class": float(d["bhattacharyya"][same].mean()),
            "bhattacharyya_other_class": float(d["bhattacharyya"][~same].mean())}


@torch.no_grad()
def evaluate_all(model: VAE, x_train: torch.Tensor, y_train: np.ndarray | None,
                 x_held: torch.Tensor, y_held: np.ndarray | None, iwae_k: int = 100,
                 fnet: FeatureNet | None = None) -> dict:
    model.eval()
    m = {f"heldout_{k}": v for k, v in elbo_terms(model, x_held).items()}
    nll = iwae_nll(model, x_held, k=iwae_k)
    m["heldout_nll_iwae"] = float(nll.mean())
    m["iwae_k"] = iwae_k
    mu_held = encode_mu(model, x_held)
    m["active_units"] = active_units(mu_held.numpy())
    m["latent_dim"] = int(mu_held.shape[1])
    if y_train is not None and y_held is not None:
        mu_train = encode_mu(model, x_train)
        m["knn5_accuracy"] = knn_accuracy(mu_train.numpy(), y_train, mu_held.numpy(), y_held)
        m.update(class_overlap(model, x_held, y_held))
    m["interp_smoothness"] = interpolation_smoothness(model, mu_held)
    if fnet is not None:
        m.update(sharpness_metrics(model, fnet, x_train, x_held, mu_held))
    return m


def snapshot_epochs(epochs: int, eval_every: int) -> set[int]:
    """Six evaluation epochs from the first to the last, evenly spread."""
    evals = [e for e in range(1, epochs + 1) if e % max(eval_every, 1) == 0 or e == epochs]
    picks = np.linspace(0, len(evals) - 1, min(6, len(evals))).round().astype(int)
    return {evals[i] for i in picks}
