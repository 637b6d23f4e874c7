"""The project's own feature network: a small CNN classifier trained on the VAE's training split.

No pretrained network can be downloaded here, so the perceptual loss and the Frechet distances
use this one. Its intermediate activations are the perceptual features; its penultimate layer
(`EMBED` numbers) is the embedding the Frechet distance is computed in ("feature-FID": an FID on
the project's own features, not comparable with Inception-FID figures).

    python -m training.features --data mnist --data-path data/mnist --out F.pt
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn
from torch.nn import functional as F

EMBED = 128
FORMAT = "vae-feature-net/2"  # /1 had a different architecture: refused, not misloaded


class FeatureNet(nn.Module):
    """A 3x3 conv at full resolution, two stride-2 convs, a fixed 3x3 pool (any input >= 4 px),
    the embedding, the classes. Small on purpose: the perceptual loss runs it (forward and
    backward) on every training batch, at about half the VAE's own cost."""

    def __init__(self, shape: list[int], classes: int):
        super().__init__()
        c = shape[0]
        self.shape, self.classes = list(shape), classes
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU())])
        self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                                   nn.Linear(64 * 9, EMBED), nn.ReLU())
        self.head = nn.Linear(EMBED, classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three conv blocks' activations and the embedding: what the perceptual loss
        compares (the last one alone is what the Frechet distance uses)."""
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return [*out, self.embed(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1])


def train_feature_net(x: np.ndarray, y: np.ndarray, epochs: int = 0, seed: int = 0,
                      batch: int = 128, quiet: bool = True) -> tuple[FeatureNet, dict]:
    """Fit the classifier on (x, y) with light shift augmentation; returns it frozen, in eval.
    epochs = 0 picks enough for small data sets too: 8, or more to make 1,000 steps. The global
    RNG is left as it was: a VAE trains the same whether its feature net was trained or loaded."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _fit(x, y, epochs or max(8, -(-1000 // -(-len(x) // batch))), seed, batch, quiet)


def _fit(x: np.ndarray, y: np.ndarray, epochs: int, seed: int, batch: int,
         quiet: bool) -> tuple[FeatureNet, dict]:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    net = FeatureNet(list(x.shape[1:]), int(y.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            shift = [int(v) for v in torch.randint(-1, 2, (2,), generator=gen)]
            xb = torch.roll(xt[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(net(xb), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not quiet:
            print(f"feature net epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")
    return freeze(net), {"epochs": epochs, "seconds": time.perf_counter() - t0}


def freeze(net: FeatureNet) -> FeatureNet:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
        p.grad = None
    return net


@torch.no_grad()
def accuracy(net: FeatureNet, x: np.ndarray, y: np.ndarray) -> float:
    pred = torch.cat([net(torch.from_numpy(x[i : i + 1000])).argmax(1)
                      for i in range(0, len(x), 1000)])
    return float((pred.numpy() == y).mean())


def save_feature_net(net: FeatureNet, path: str | Path, info: dict) -> dict:
    """Writes the network's payload (what the checkpoint embeds too) and returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "shape": net.shape, "classes": net.classes,
               "state_dict": net.state_dict(), "info": info}
    torch.save(payload, path)
    return payload


def feature_net_from_payload(payload: dict) -> FeatureNet:
    if payload.get("format") != FORMAT:
        raise ValueError(f"feature network format {payload.get('format')!r}, this code reads "
                         f"{FORMAT!r}: delete the file to train a new one")
    with torch.random.fork_rng():  # a module's random init would move the caller's RNG
        net = FeatureNet(payload["shape"], payload["classes"])
    net.load_state_dict(payload["state_dict"])
    return freeze(net)


def load_feature_net(path: str | Path) -> tuple[FeatureNet, dict]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return feature_net_from_payload(payload), payload


def obtain_feature_net(path: str | Path, x: np.ndarray, y: np.ndarray | None, epochs: int,
                       seed: int) -> tuple[FeatureNet, dict]:
    """Reuse the feature network at `path` when it is there (so runs compared with each other
    share one feature space), else train it on (x, y) and save it there."""
    path = Path(path)
    if path.exists():
        net, payload = load_feature_net(path)
        if payload["shape"] != list(x.shape[1:]):
            raise SystemExit(f"{path}: feature network for shape {payload['shape']}, "
                             f"the data is {list(x.shape[1:])}")
        return net, payload
    if y is None:
        raise SystemExit("the feature network is a classifier: it needs labelled data "
                         "(or an existing --feature-net file)")
    net, info = train_feature_net(x, y, epochs, seed)
    return net, save_feature_net(net, path, info)


def perceptual_distance(net: FeatureNet, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per item: sum over the feature layers of the mean squared activation difference, scaled
    by the layer's size so each layer counts like one image's worth of pixels (nats-like scale)."""
    with torch.no_grad():
        target = net.features(x)
    total = torch.zeros(len(x), device=x.device)
    pixels = x[0].numel()
    for a, b in zip(net.features(x_hat), target, strict=True):
        total = total + pixels * (a - b).pow(2).flatten(1).mean(dim=1)
    return total


@torch.no_grad()
def embeddings(net: FeatureNet, x: torch.Tensor | np.ndarray, batch: int = 1000) -> np.ndarray:
    x = torch.as_tensor(x)
    return torch.cat([net.features(x[i : i + batch])[-1] for i in range(0, len(x), batch)]
                     ).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||m_a - m_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussian fits of two sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU units make the covariances singular: harmless
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(covmean).all():  # regularize as the reference FID code does
            eps = np.eye(len(s_a)) * 1e-6
            covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def edge_magnitude(x: torch.Tensor | np.ndarray) -> float:
    """Mean gradient magnitude (forward differences, both axes) over the images' pixels."""
    x = torch.as_tensor(x, dtype=torch.float32)
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    return float(torch.sqrt(dx.pow(2) + dy.pow(2)).mean())


def main(argv: list[str] | None = None) -> None:
    from training.data import load_dataset

    p = argparse.ArgumentParser(prog="python -m training.features",
                                description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--data-path")
    p.add_argument("--epochs", type=int, default=0, help="0: 8, or more for 1,000 steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    ds = load_dataset(a.data, a.data_path)
    if ds.labels is None:
        raise SystemExit(f"{a.data}: the feature network is a classifier and needs labels")
    net, info = train_feature_net(ds.x[ds.train_idx], ds.labels[ds.train_idx], a.epochs, a.seed,
                                  quiet=False)
    info["heldout_accuracy"] = accuracy(net, ds.x[ds.heldout_idx], ds.labels[ds.heldout_idx])
    info["data"] = a.data
    save_feature_net(net, a.out, info)
    print(f"wrote {a.out}: held-out accuracy {info['heldout_accuracy']:.4f} "
          f"in {info['seconds']:.1f} s")


if __name__ == "__main__":
    main()
