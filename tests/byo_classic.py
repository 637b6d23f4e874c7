"""A VAE written the way outside code writes it (tests/test_byo.py, docs/BRING_YOUR_OWN.md):
nothing from this project is imported here."""

import torch
import torch.nn.functional as F
from torch import nn


class ClassicVAE(nn.Module):
    """pytorch/examples' VAE, on flat 8x8 digits."""

    def __init__(self, d: int = 64, h: int = 128, z: int = 6):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(d, h), nn.Linear(h, z), nn.Linear(h, z)
        self.fc3, self.fc4 = nn.Linear(z, h), nn.Linear(h, d)

    def encode(self, x):
        h = F.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))


def classic_vae() -> ClassicVAE:  # the CLI's --factory
    return ClassicVAE()


def train_classic(x: torch.Tensor, epochs: int = 8, seed: int = 0) -> ClassicVAE:
    """The usual loop: BCE + closed-form KL, Adam, batches of 100; eval mode at the end."""
    torch.manual_seed(seed)
    m = ClassicVAE(d=x.shape[1])
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    for _ in range(epochs):
        for xb in x.split(100):
            mu, lv = m.encode(xb)
            z = mu + torch.randn_like(mu) * (0.5 * lv).exp()
            loss = F.binary_cross_entropy(m.decode(z), xb, reduction="sum") \
                - 0.5 * (1 + lv - mu**2 - lv.exp()).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return m.eval()
