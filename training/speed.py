"""Two levers for more model per CPU-second of training (docs/MODEL_QUALITY.md): bf16 autocast
of the forward pass, and an exponential moving average of the weights for evaluation/export."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def autocast(precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A context factory for the training forward pass. bf16: PyTorch's CPU autocast runs convs
    and GEMMs in bfloat16 through oneDNN (1.6x faster epochs for the MNIST conv VAE on a CPU
    with AVX512-BF16; on one without, correct but possibly slower). The loss, the optimizer's
    fp32 master weights and every evaluation stay in float32."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "bf16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    raise SystemExit(f"--precision {precision!r}: fp32 or bf16")


def ema_model(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights (PyTorch's AveragedModel), or None."""
    if decay <= 0:
        return None
    if decay >= 1:
        raise SystemExit(f"--ema {decay}: a decay in (0, 1), e.g. 0.999")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
