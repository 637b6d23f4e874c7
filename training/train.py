"""Train a VAE and write a checkpoint that loads with torch.load(weights_only=True).

The command (`vae-train`, `python -m training`) is training/cli.py: every TrainConfig field is
an option (nanoGPT style: one flat config, overridable).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training import checkpoint, speed
from training import distributed as ddp
from training.adversarial import Adversary
from training.augment import shift_augment
from training.data import Dataset, load_dataset
from training.evaluate import elbo_terms, evaluate_all, organization, snapshot_epochs
from training.features import accuracy, obtain_feature_net, perceptual_distance
from training.model import VAE, ModelConfig, elbo_from_output, kl_weight


@dataclass
class TrainConfig:
    data: str = "digits"  # digits | mnist | npy | images
    data_path: str | None = None
    arch: str = "mlp"  # mlp | conv
    latent_dim: int = 8
    hidden: str = "256,128"
    channels: str = "32,64"
    blocks: int = 0
    upsample: str = "transpose"  # conv decoder: transpose | nearest | shuffle (training/nets.py)
    activation: str = "relu"  # relu | silu | elu
    likelihood: str = "bernoulli"  # bernoulli | gaussian
    obs_sigma: float = 0.1
    learn_obs_var: bool = False
    epochs: int = 150
    batch_size: int = 64  # per process
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine (decay to 0 over the epochs)
    beta: float = 1.0  # > 1 gives a beta-VAE
    warmup_epochs: float = 10.0  # linear KL warm-up from 0 to beta
    free_bits: float = 0.0  # nats per latent unit
    augment_shift: int = 0  # random translations of up to this many pixels
    patience: int = 0  # early stopping on held-out -ELBO, in evaluations; 0 = off
    # held-out evaluation (best-weights selection, checkpoint) every this many epochs and
    # always at the last: evaluating and saving cost ~10 % of a small epoch
    eval_every: int = 1
    # bf16: forward passes under CPU autocast (oneDNN bf16 convs and GEMMs, 1.6x faster epochs
    # on a CPU with AVX512-BF16; loss, optimizer and evaluation stay fp32)
    precision: str = "fp32"  # fp32 | bf16
    ema: float = 0.0  # >0: evaluate, select and export an exponential moving average (decay)
    val_items: int = 0  # >0: the training split's last items choose the best epoch, not held-out
    select: str = "best"  # best (held-out -ELBO) | last: which weights the checkpoint exports
    # sharper reconstructions (docs/MODEL_QUALITY.md): a feature-space term and a VAE-GAN term
    perceptual_weight: float = 0.0
    adversarial_weight: float = 0.0
    adversarial_start: float = 5.0  # epochs without the GAN term (the discriminator idles too)
    adversarial_ramp: float = 5.0  # epochs over which its weight rises linearly to full
    disc_lr: float = 2e-4
    # the project's classifier for the perceptual loss and feature-FID; trained on the training
    # split and saved when absent (default: features.pt beside the checkpoint)
    feature_net: str | None = None
    feature_epochs: int = 0  # 0: 8, or more to make 1,000 steps on small data
    iwae_k: int = 100
    seed: int = 0
    threads: int = 2
    out: str = "runs/digits/checkpoint.pt"
    resume: bool = False
    shard_log: str | None = None  # DDP proof: each rank writes the indices it saw
    quiet: bool = False


def model_config(cfg: TrainConfig, shape: list[int]) -> ModelConfig:
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    return ModelConfig(shape, cfg.latent_dim, cfg.arch, ints(cfg.hidden), ints(cfg.channels),
                       cfg.blocks, cfg.upsample, cfg.likelihood, cfg.obs_sigma, cfg.learn_obs_var,
                       cfg.activation)


def train(cfg: TrainConfig, data: Dataset | None = None) -> dict:
    rank, world = ddp.setup()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    data = data or load_dataset(cfg.data, cfg.data_path)
    fit_idx, sel_idx, ev = selection_split(data, cfg.val_items)
    x_train, x_sel = torch.from_numpy(data.x[fit_idx]), torch.from_numpy(data.x[sel_idx])
    x_held = torch.from_numpy(data.x[data.heldout_idx])
    mcfg = model_config(cfg, data.shape)
    model = VAE(mcfg)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    out = Path(cfg.out)
    state = {"epoch": 0, "step": 0, "best": float("inf"), "bad_epochs": 0, "history": []}
    best_weights = copy.deepcopy(model.state_dict())
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    if cfg.resume and out.exists():
        ck = torch.load(out, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["last_state_dict"])
        opt.load_state_dict(ck["optimizer"])
        best_weights = ck["state_dict"]
        state = ck["state"]
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])  # eps of the reparameterization continues exactly
    autocast, ema = speed.autocast(cfg.precision), speed.ema_model(model, cfg.ema)
    if ema is not None and cfg.resume and out.exists() and "ema_state_dict" in ck:
        ema.load_state_dict(ck["ema_state_dict"])
    net = ddp.wrap(model, world)
    sampler = ddp.sampler(len(x_train), rank, world, cfg.seed)
    steps_per_epoch = len(sampler) // cfg.batch_size + bool(len(sampler) % cfg.batch_size)
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    fnet, fnet_payload = None, None
    if cfg.perceptual_weight > 0 or data.labels is not None or cfg.feature_net:
        fnet, fnet_payload = obtain_feature_net(
            cfg.feature_net or out.parent / "features.pt", data.x[fit_idx],
            _labels(data, fit_idx), cfg.feature_epochs, cfg.seed)
    adversary = None
    if cfg.adversarial_weight > 0:
        if world > 1:
            raise SystemExit("--adversarial-weight is not supported with torchrun (DDP)")
        adversary = Adversary(data.shape, cfg.adversarial_weight,
                              int(cfg.adversarial_start * steps_per_epoch),
                              int(cfg.adversarial_ramp * steps_per_epoch), cfg.disc_lr)
        if cfg.resume and out.exists():
            adversary.load_state_dict(ck["adversary"])
    seen: list[int] = []
    y_held, y_sel = _labels(data, data.heldout_idx), _labels(data, sel_idx)
    snap_at = snapshot_epochs(cfg.epochs, cfg.eval_every)
    t0 = time.perf_counter()
    # a bar on a terminal; in a log (not a TTY), a plain line every tenth of the run instead
    tty, first = sys.stderr.isatty(), state["epoch"]
    bar = tqdm(range(first, cfg.epochs), desc="epochs", disable=cfg.quiet or rank > 0 or not tty)
    for epoch in bar:
        model.train()
        sampler.set_epoch(epoch)
        if cfg.lr_schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))
        order = torch.tensor(list(sampler)) if world > 1 else torch.randperm(len(x_train),
                                                                             generator=gen)
        seen += order.tolist() if cfg.shard_log else []
        sums, beta = np.zeros(6), 0.0
        for i in range(0, len(order), cfg.batch_size):
            xb = x_train[order[i : i + cfg.batch_size]]
            if cfg.augment_shift:
                xb = shift_augment(xb, cfg.augment_shift, gen)
            beta = kl_weight(state["step"], warmup_steps, cfg.beta)
            with autocast():
                out_b, mu, logvar = net(xb)
            out_b, mu, logvar = out_b.float(), mu.float(), logvar.float()
            loss, rec, kl = elbo_from_output(model, out_b, mu, logvar, xb, beta, cfg.free_bits)
            perc = adv_g = adv_d = torch.zeros(())
            x_rec = torch.sigmoid(out_b)  # the decoded mean both sharpening terms judge
            if cfg.perceptual_weight > 0:
                perc = perceptual_distance(fnet, x_rec, xb).mean()
                loss = loss + cfg.perceptual_weight * perc
            if adversary is not None and adversary.active(state["step"]):
                x_prior = model.decode(torch.randn(len(xb), cfg.latent_dim, generator=gen))
                adv_d = torch.tensor(adversary.d_step(xb, x_rec, x_prior))
                adv_g = adversary.g_loss(x_rec, x_prior).mean()
                loss = loss + adversary.weight_at(state["step"]) * adv_g
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            state["step"] += 1
            sums += np.array([t.item() for t in (loss, rec, kl, perc, adv_g, adv_d)]) * len(xb)
        means = [float(v) for v in sums / len(order)]
        train_rec, train_kl = means[1], means[2]
        row = {"epoch": epoch + 1, "beta": beta, "train_loss": means[0],
               "train_recon": train_rec, "train_kl": train_kl}
        extra_postfix = {}
        if cfg.perceptual_weight > 0:
            row["train_perceptual"] = extra_postfix["perc"] = means[3]
        if adversary is not None:
            row["train_adv_g"], row["train_adv_d"] = means[4], means[5]
            extra_postfix.update(adv_g=means[4], adv_d=means[5])
        state["epoch"] = epoch + 1
        evaluate = (epoch + 1) % max(cfg.eval_every, 1) == 0 or epoch + 1 == cfg.epochs
        stop = False
        if evaluate:
            model.eval()
            chosen = model if ema is None else ema.module
            held = elbo_terms(chosen, x_sel)  # the selection set: held-out or validation
            row.update({f"{ev}_{k}": v for k, v in held.items()})
            if ema is not None:  # the raw weights' figures stay in the history beside it
                row.update({f"{ev}_{k}_raw": v for k, v in elbo_terms(model, x_sel).items()})
            # the organization of the weights being trained: the average trails them by
            # ~1/(1-decay) steps and early on still holds much of the initialization
            org, mu_now = organization(model, x_sel, y_sel)
            row.update({k.replace("heldout", ev): v for k, v in org.items()})
            if epoch + 1 in snap_at:  # the latent map at six epochs, first to last
                state.setdefault("snapshots", {})[str(epoch + 1)] = \
                    torch.from_numpy(mu_now)
            if held["neg_elbo"] < state["best"] or cfg.select == "last":
                state["best"], state["bad_epochs"] = held["neg_elbo"], 0
                best_weights = copy.deepcopy(chosen.state_dict())
            else:
                state["bad_epochs"] += 1
            bar.set_postfix(rec=f"{train_rec:.2f}", kl=f"{train_kl:.2f}",
                            held=f"{held['neg_elbo']:.2f}",
                            **{k: f"{v:.3f}" for k, v in extra_postfix.items()})
            stop = cfg.patience > 0 and state["bad_epochs"] >= cfg.patience
        state["history"].append(row)
        if not (tty or cfg.quiet or rank) and \
                ((epoch + 1) % max(1, cfg.epochs // 10) == 0 or epoch + 1 == cfg.epochs):
            spent = time.perf_counter() - t0
            left = spent / (epoch + 1 - first) * (cfg.epochs - epoch - 1)
            held_text = f", {ev} -ELBO {row[ev + '_neg_elbo']:.2f}" if evaluate else ""
            print(f"epoch {epoch + 1}/{cfg.epochs}: recon {train_rec:.2f}, KL {train_kl:.2f}"
                  f"{held_text} ({spent:.0f} s, about {left:.0f} s left)", flush=True)
        if rank == 0 and evaluate:
            checkpoint.save(out, checkpoint.payload(
                model.state_dict(), best_weights, opt, gen, state, mcfg, cfg, data,
                extras=checkpoint.extras(adversary, fnet_payload, ema)))
        if stop:
            break
    if cfg.shard_log:
        ddp.write_shard_log(cfg.shard_log, rank, seen, model)
    last_weights = copy.deepcopy(model.state_dict())  # --resume continues from these
    model.load_state_dict(best_weights)
    payload = {}
    if rank == 0:
        metrics = evaluate_all(model, x_train, _labels(data, fit_idx), x_held,
                               y_held, cfg.iwae_k, fnet)
        if fnet is not None and y_held is not None:
            metrics["feature_net_accuracy"] = accuracy(fnet, x_held.numpy(), y_held)
        metrics["train_seconds"] = time.perf_counter() - t0
        metrics["epochs"] = state["epoch"]
        payload = checkpoint.payload(last_weights, best_weights, opt, gen, state, mcfg, cfg,
                                     data, metrics,
                                     checkpoint.extras(adversary, fnet_payload, ema))
        checkpoint.save(out, payload)
        (out.parent / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    ddp.teardown(world)
    return payload


def selection_split(data: Dataset, val_items: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(items to fit, items that choose the best epoch, their name in the history). With
    val_items, the last val_items of the training split choose, and the held-out split counts
    only in the final figures; without, the held-out split does both."""
    if not val_items:
        return data.train_idx, data.heldout_idx, "heldout"
    if not 0 < val_items < len(data.train_idx):
        raise SystemExit(f"--val-items {val_items}: must lie in [1, {len(data.train_idx) - 1}]")
    return data.train_idx[:-val_items], data.train_idx[-val_items:], "val"


def _labels(data: Dataset, idx: np.ndarray) -> np.ndarray | None:
    return None if data.labels is None else data.labels[idx]


def main(argv: list[str] | None = None) -> None:
    """`python -m training`: training/cli.py's command."""
    from training.cli import main as cli_main

    cli_main(argv)
