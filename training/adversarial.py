"""VAE-GAN style adversarial training (Larsen et al. 2016): a discriminator judges data against
the decoder's reconstructions and its prior samples; the decoder gets a non-saturating GAN term.

Stabilisers: spectral norm on every discriminator layer (Miyato et al. 2018), a warm-up (no
adversarial term for `start` epochs, then a linear ramp of its weight over `ramp` epochs) so the
VAE learns a sensible decoder before the discriminator pushes it, and Adam with beta1 = 0.5.
The discriminator is training-only: it is saved in the checkpoint, never exported.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from training.nets import _conv_sizes


class Discriminator(nn.Module):
    """Two spectral-normed stride-2 convs and a linear score (a logit: > 0 says "data")."""

    def __init__(self, shape: list[int], channels: tuple[int, int] = (16, 32)):
        super().__init__()
        c, h, w = shape
        fh, fw = _conv_sizes(h, w, len(channels))[-1]
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(c, channels[0], 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(channels[0], channels[1], 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2), nn.Flatten(),
            spectral_norm(nn.Linear(channels[1] * fh * fw, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class Adversary:
    """The discriminator, its optimizer and the weight schedule of the decoder's GAN term."""

    def __init__(self, shape: list[int], weight: float, start_steps: int, ramp_steps: int,
                 lr: float = 2e-4):
        self.disc = Discriminator(shape)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.999))
        self.weight, self.start, self.ramp = weight, start_steps, ramp_steps

    def active(self, step: int) -> bool:
        return self.weight > 0 and step >= self.start

    def weight_at(self, step: int) -> float:
        if not self.active(step):
            return 0.0
        return self.weight * min(1.0, (step - self.start + 1) / max(self.ramp, 1))

    def d_step(self, x: torch.Tensor, x_rec: torch.Tensor, x_prior: torch.Tensor) -> float:
        """One discriminator update on data vs detached fakes: only its own weights move."""
        self.disc.requires_grad_(True)
        real = self.disc(x)
        fake = self.disc(torch.cat([x_rec.detach(), x_prior.detach()]))
        loss = F.softplus(-real).mean() + F.softplus(fake).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def g_loss(self, x_rec: torch.Tensor, x_prior: torch.Tensor) -> torch.Tensor:
        """Non-saturating generator term per item, -log D(fake), for reconstructions and prior
        samples; the discriminator is frozen here so the VAE's backward leaves it untouched."""
        self.disc.requires_grad_(False)
        n = len(x_rec)
        logits = self.disc(torch.cat([x_rec, x_prior]))
        return F.softplus(-logits[:n]) + F.softplus(-logits[n:])

    def state_dict(self) -> dict:
        return {"discriminator": self.disc.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["discriminator"])
        self.opt.load_state_dict(state["optimizer"])
