"""Data augmentation for training: random shifts of whole images (`--augment-shift`)."""

from __future__ import annotations

import torch


def shift_augment(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by a random integer offset in [-k, k]^2, zero-filled."""
    n, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (k, k, k, k))
    dy, dx = (torch.randint(0, 2 * k + 1, (2, n), generator=gen))
    rows = (torch.arange(h)[None] + dy[:, None])[:, :, None]  # [n, h, 1]
    cols = (torch.arange(w)[None] + dx[:, None])[:, None, :]  # [n, 1, w]
    return pad[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
