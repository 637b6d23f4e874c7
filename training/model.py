"""The classic VAE (Kingma & Welling 2014), readable in one screen.

Encoder q(z|x) = N(mu, diag(sigma^2)) outputs mu and logvar = log sigma^2; z = mu + sigma * eps
(reparameterization); the decoder gives p(x|z): Bernoulli (logits; BCE on targets in [0, 1]) or
Gaussian (mean, with a fixed or learned per-pixel variance). The loss is the negative ELBO:
reconstruction + beta * KL(q(z|x) || N(0, I)), KL in closed form, optionally with free bits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from training.nets import build

LOG_2PI = math.log(2 * math.pi)


@dataclass
class ModelConfig:
    input_shape: list[int] = field(default_factory=lambda: [1, 8, 8])  # [C, H, W]
    latent_dim: int = 8
    arch: str = "mlp"  # mlp | conv
    hidden: list[int] = field(default_factory=lambda: [256, 128])  # MLP widths; decoder mirrors
    channels: list[int] = field(default_factory=lambda: [32, 64])  # conv widths (stride 2 each)
    blocks: int = 0  # conv: extra 3x3 conv layers per resolution
    upsample: str = "transpose"  # conv decoder doublings: transpose | nearest | shuffle
    likelihood: str = "bernoulli"  # bernoulli | gaussian
    obs_sigma: float = 0.1  # gaussian: fixed observation sigma (the L2 case) ...
    learn_obs_var: bool = False  # ... or a learned per-pixel log-variance
    activation: str = "relu"  # relu | silu | elu, between every two layers

    def to_dict(self) -> dict:
        return asdict(self)


class VAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood {cfg.likelihood!r}: bernoulli or gaussian")
        self.cfg = cfg
        self.encoder, self.decoder = build(cfg.arch, cfg.input_shape, cfg.latent_dim,
                                           cfg.hidden, cfg.channels, cfg.blocks, cfg.upsample,
                                           cfg.activation)
        init = 2 * math.log(cfg.obs_sigma)
        self.obs_logvar = nn.Parameter(torch.full(cfg.input_shape, init),
                                       requires_grad=cfg.learn_obs_var)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's raw output: Bernoulli logits, or the Gaussian mean before a sigmoid."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z): Bernoulli probabilities or the Gaussian mean, both in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode_logits(z), mu, logvar

    def recon_nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per item, in nats, from the decoder's raw output."""
        if self.cfg.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            mean, logvar = torch.sigmoid(out), self.obs_logvar.expand_as(out)
            nll = 0.5 * ((x - mean).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI)
        return nll.flatten(1).sum(dim=1)


def kl_per_unit(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per item and latent unit: [N, Z]."""
    return 0.5 * (logvar.exp() + mu.pow(2) - logvar - 1.0)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Closed form per item: 0.5 * sum(sigma^2 + mu^2 - log sigma^2 - 1)."""
    return kl_per_unit(mu, logvar).sum(dim=1)


def neg_elbo(model: nn.Module, x: torch.Tensor, beta: float = 1.0,
             free_bits: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The objective (recon + beta * KL) and the two true terms, batch means in nats per item.

    With free bits lambda (Kingma et al. 2016) the objective's KL is sum_u max(lambda, E_batch
    KL_u): units below lambda nats get no pressure towards the prior. The KL returned is the true
    one, so reported figures stay an honest -ELBO.
    """
    out, mu, logvar = model(x)  # model may be a DistributedDataParallel wrapper
    return elbo_from_output(getattr(model, "module", model), out, mu, logvar, x, beta, free_bits)


def elbo_from_output(model: VAE, out: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                     x: torch.Tensor, beta: float = 1.0, free_bits: float = 0.0,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """neg_elbo's terms from a forward pass already made (the training loop reuses `out`)."""
    rec = model.recon_nll(out, x).mean()
    per_unit = kl_per_unit(mu, logvar).mean(dim=0)
    kl = per_unit.sum()
    kl_obj = torch.clamp(per_unit, min=free_bits).sum() if free_bits > 0 else kl
    return rec + beta * kl_obj, rec, kl


def kl_weight(step: int, warmup_steps: int, beta: float) -> float:
    """Linear KL warm-up (annealing) from 0 to beta over warmup_steps optimizer steps."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)


def load_checkpoint(path: str | Path) -> tuple[VAE, dict]:
    """The VAE of a checkpoint written by training (best held-out weights, eval mode) and the
    whole payload; tensors only (weights_only=True: nothing is unpickled)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = VAE(ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload
