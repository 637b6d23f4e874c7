"""Train a VAE and write a checkpoint that loads with torch.load(weights_only=True).

    python -m training --data digits --epochs 60 --out runs/digits/checkpoint.pt

Every TrainConfig field is a flag (nanoGPT style: a flat config, overridable from the CLI).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.data import Dataset, load_dataset
from training.model import VAE, ModelConfig, kl_divergence, kl_weight, neg_elbo, reconstruction_nll


@dataclass
class TrainConfig:
    data: str = "digits"
    data_path: str | None = None
    latent_dim: int = 8
    hidden: str = "256,128"
    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    beta: float = 1.0
    warmup_epochs: float = 10.0  # linear KL warm-up from 0 to beta
    seed: int = 0
    threads: int = 2
    out: str = "runs/digits/checkpoint.pt"
    quiet: bool = False


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, seed: int = 1234) -> dict[str, float]:
    """Held-out -ELBO (beta = 1) and its two terms, nats per item, with a fixed eps draw."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    mu, logvar = model.encode(x)
    eps = torch.randn(mu.shape, generator=gen)
    z = mu + torch.exp(0.5 * logvar) * eps
    rec = reconstruction_nll(model.decode_logits(z), x).mean().item()
    kl = kl_divergence(mu, logvar).mean().item()
    return {"heldout_neg_elbo": rec + kl, "heldout_recon": rec, "heldout_kl": kl}


def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomic: write beside, then rename, so a reader never sees half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, data: Dataset | None = None) -> dict:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    data = data or load_dataset(cfg.data, cfg.data_path)
    x_train = torch.from_numpy(data.x[data.train_idx])
    x_held = torch.from_numpy(data.x[data.heldout_idx])
    mcfg = ModelConfig(
        input_shape=data.shape,
        latent_dim=cfg.latent_dim,
        hidden=[int(h) for h in cfg.hidden.split(",") if h],
    )
    model = VAE(mcfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = -(-len(x_train) // cfg.batch_size)
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    history, step, t0 = [], 0, time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc="epochs", disable=cfg.quiet)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        sums = np.zeros(3)
        for i in range(0, len(x_train), cfg.batch_size):
            xb = x_train[perm[i : i + cfg.batch_size]]
            beta = kl_weight(step, warmup_steps, cfg.beta)
            loss, rec, kl = neg_elbo(model, xb, beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            sums += np.array([loss.item(), rec.item(), kl.item()]) * len(xb)
        train_loss, train_rec, train_kl = (float(v) for v in sums / len(x_train))
        row = {"epoch": epoch + 1, "beta": beta, "train_loss": train_loss,
               "train_recon": train_rec, "train_kl": train_kl, **evaluate(model, x_held)}
        history.append(row)
        bar.set_postfix(rec=f"{train_rec:.2f}", kl=f"{train_kl:.2f}",
                        held=f"{row['heldout_neg_elbo']:.2f}")

    metrics = evaluate(model, x_held)
    metrics["train_seconds"] = time.perf_counter() - t0
    payload = {
        "format": "vae-checkpoint/1",
        "state_dict": model.state_dict(),
        "model_config": mcfg.to_dict(),
        "train_config": asdict(cfg),
        "data": data.describe(),
        "metrics": metrics,
        "history": history,
    }
    out = Path(cfg.out)
    save_checkpoint(out, payload)
    (out.parent / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return payload


def load_checkpoint(path: str | Path) -> tuple[VAE, dict]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = VAE(ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action="store_true", default=f.default)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=f.default)
    return TrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    payload = train(cfg)
    m = payload["metrics"]
    print(f"wrote {cfg.out}: held-out -ELBO {m['heldout_neg_elbo']:.2f} nats "
          f"(recon {m['heldout_recon']:.2f}, KL {m['heldout_kl']:.2f}) "
          f"in {m['train_seconds']:.1f} s")
