"""The classic VAE (Kingma & Welling 2014), readable in one screen.

Encoder q(z|x) = N(mu, diag(sigma^2)) outputs mu and logvar = log sigma^2; z = mu + sigma * eps
(reparameterization); the decoder maps z to Bernoulli logits over the pixels. The loss is the
negative ELBO: BCE reconstruction + beta * KL(q(z|x) || N(0, I)), KL in closed form.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ModelConfig:
    input_shape: list[int] = field(default_factory=lambda: [1, 8, 8])  # [C, H, W]
    latent_dim: int = 8
    hidden: list[int] = field(default_factory=lambda: [256, 128])  # encoder widths; decoder mirrors
    likelihood: str = "bernoulli"

    def to_dict(self) -> dict:
        return asdict(self)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.likelihood != "bernoulli":
            raise ValueError(f"likelihood {cfg.likelihood!r} is not supported (bernoulli only)")
        self.cfg = cfg
        d = math.prod(cfg.input_shape)
        # The encoder's last layer emits mu and logvar side by side: [N, 2Z].
        self.encoder = mlp([d, *cfg.hidden, 2 * cfg.latent_dim])
        self.decoder = mlp([cfg.latent_dim, *reversed(cfg.hidden), d])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x.flatten(1))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.cfg.input_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z): Bernoulli probabilities."""
        return torch.sigmoid(self.decode_logits(z))

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode_logits(z), mu, logvar


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per item = 0.5 * sum(sigma^2 + mu^2 - log sigma^2 - 1)."""
    return 0.5 * torch.sum(logvar.exp() + mu.pow(2) - logvar - 1.0, dim=1)


def reconstruction_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per item under a Bernoulli likelihood (BCE on targets in [0, 1])."""
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return bce.flatten(1).sum(dim=1)


def neg_elbo(
    model: VAE, x: torch.Tensor, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean over the batch of (recon + beta * KL), plus the two terms (means, nats per item)."""
    logits, mu, logvar = model(x)
    rec = reconstruction_nll(logits, x).mean()
    kl = kl_divergence(mu, logvar).mean()
    return rec + beta * kl, rec, kl


def kl_weight(step: int, warmup_steps: int, beta: float) -> float:
    """Linear KL warm-up (annealing) from 0 to beta over warmup_steps optimizer steps."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)
