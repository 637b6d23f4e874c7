"""The training checkpoint: what `training` writes and `export`, `training.report` and
`--resume` read. Written atomically; loads with torch.load(weights_only=True)."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.adversarial import Adversary
from training.data import Dataset
from training.model import ModelConfig


def save(path: Path, payload: dict) -> None:
    """Atomic: write beside, then rename, so a reader never sees half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def extras(adversary: Adversary | None, fnet_payload: dict | None,
           ema: torch.nn.Module | None = None) -> dict:
    """Checkpoint entries beyond the VAE: the discriminator and the weights' moving average
    (to resume; the average is exported through `state_dict` when chosen) and the feature
    network (export writes it beside the graphs for the quality figures)."""
    found = {} if adversary is None else {"adversary": adversary.state_dict()}
    found |= {} if ema is None else {"ema_state_dict": ema.state_dict()}
    return found | ({} if fnet_payload is None else {"feature_net": fnet_payload})


def payload(last: dict, best: dict, opt: torch.optim.Optimizer, gen: torch.Generator,
            state: dict, mcfg: ModelConfig, cfg: Any, data: Dataset,
            metrics: dict | None = None, extras: dict | None = None) -> dict:
    """Everything a checkpoint holds (cfg: the TrainConfig): `last` the weights training has
    reached (what --resume continues from), `best` the chosen ones (what export uses)."""
    return (extras or {}) | {
        "format": "vae-checkpoint/1",
        "state_dict": best,
        "last_state_dict": last,
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "state": state,
        "model_config": mcfg.to_dict(),
        "train_config": asdict(cfg),
        "data": data.describe(),
        # the held-out items themselves: export needs them (parity on real data, reference set,
        # score quantiles, variants) and must not depend on the data being at hand again
        "heldout": {"x": torch.from_numpy(np.ascontiguousarray(data.x[data.heldout_idx])),
                    "labels": None if data.labels is None else
                    torch.from_numpy(np.asarray(data.labels[data.heldout_idx], np.int64))},
        "metrics": metrics or {"heldout_neg_elbo": state["best"]},
        "history": state["history"],
    }
