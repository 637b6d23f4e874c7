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
