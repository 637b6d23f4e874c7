"""`vae-train` (also `python -m training`): train a VAE and write a checkpoint.

    vae-train --data digits --epochs 150 --out runs/digits/checkpoint.pt
    vae-train --config configs/mnist.toml --epochs 5        # options override the file
    torchrun --nproc_per_node=2 -m training --data digits  # DistributedDataParallel

Every TrainConfig field is an option (nanoGPT style: one flat config, overridable); HELP says
what each one means, and a test fails when a field has no entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import tomllib

from modelrepo.cli import Parser, usage_error

# field -> (meaning, choices or None)
HELP: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "data": ("the training data: scikit-learn's embedded 8x8 digits, MNIST or Fashion-MNIST "
             "IDX files, an .npy/.npz array file, or a folder of images (subfolders name the "
             "labels)", ("digits", "mnist", "fashion", "npy", "images")),
    "data_path": ("where --data lives (mnist, fashion: the IDX folder, default "
                  "$VAE_DATA_DIR/<name>, i.e. data/<name>; npy: the file; images: the folder)",
                  None),
    "arch": ("encoder/decoder networks: fully connected or convolutional", ("mlp", "conv")),
    "latent_dim": ("latent units (size of z)", None),
    "hidden": ("mlp: hidden layer widths, comma-separated", None),
    "channels": ("conv: channels per downsampling stage, comma-separated", None),
    "blocks": ("conv: residual blocks per stage", None),
    "upsample": ("conv decoder upsampling", ("transpose", "nearest", "shuffle")),
    "activation": ("hidden activation", ("relu", "silu", "elu")),
    "likelihood": ("p(x|z): Bernoulli on pixel intensities, or a Gaussian",
                   ("bernoulli", "gaussian")),
    "obs_sigma": ("gaussian: the observation standard deviation", None),
    "learn_obs_var": ("gaussian: learn one observation log-variance instead", None),
    "epochs": ("passes over the training split", None),
    "batch_size": ("items per step (per process under torchrun)", None),
    "lr": ("Adam learning rate", None),
    "lr_schedule": ("constant, or cosine decay to 0 over the epochs", ("constant", "cosine")),
    "beta": ("weight of the KL term at the end of the warm-up (> 1: a beta-VAE)", None),
    "warmup_epochs": ("epochs of linear KL warm-up from 0 to beta", None),
    "free_bits": ("nats per latent unit below which KL is not penalised", None),
    "augment_shift": ("random translations of up to this many pixels", None),
    "patience": ("stop after this many evaluations without a better held-out -ELBO (0: off)",
                 None),
    "eval_every": ("held-out evaluation and checkpoint every this many epochs (and at the "
                   "last)", None),
    "precision": ("forward passes in fp32, or under CPU bf16 autocast", ("fp32", "bf16")),
    "ema": ("> 0: evaluate, select and export an exponential moving average of the weights "
            "with this decay", None),
    "val_items": ("> 0: the training split's last items choose the best epoch instead of the "
                  "held-out split", None),
    "select": ("the weights the checkpoint exports: best held-out -ELBO, or the last",
               ("best", "last")),
    "perceptual_weight": ("weight of a feature-space reconstruction term (0: off)", None),
    "adversarial_weight": ("weight of a VAE-GAN discriminator term (0: off)", None),
    "adversarial_start": ("epochs before the GAN term starts", None),
    "adversarial_ramp": ("epochs over which the GAN weight rises to full", None),
    "disc_lr": ("discriminator learning rate", None),
    "feature_net": ("the classifier for the perceptual loss and feature-FID (trained and "
                    "saved when absent; default: features.pt beside --out)", None),
    "feature_epochs": ("epochs of that classifier's training (0: 8, or more to make 1,000 "
                       "steps on small data)", None),
    "iwae_k": ("importance samples of the final IWAE NLL", None),
    "seed": ("random seed (weights, batches, ε)", None),
    "threads": ("torch CPU threads", None),
    "out": ("checkpoint file to write (metrics.json beside it)", None),
    "resume": ("continue from --out's last epoch, exactly where it stopped", None),
    "shard_log": ("torchrun check: each rank writes the item indices it saw here", None),
    "quiet": ("no progress output", None),
}


def parser(defaults: dict | None = None) -> Parser:
    from training.train import TrainConfig

    defaults = defaults or {}
    p = Parser(prog="vae-train", usage="vae-train [--config FILE] [--OPTION VALUE ...]",
               description=__doc__.split("\n\n", 1)[1].rstrip())
    p.add_argument("--config", help="a TOML file of these options (keys with underscores); "
                                    "options given here override it")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = defaults.get(f.name, f.default)
        meaning, choices = HELP[f.name]
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                           help=meaning)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=default, choices=choices, help=meaning,
                           metavar=None if choices else f.name.upper())
    return p


def parse_args(argv: list[str] | None = None):  # -> TrainConfig (torch imports lazily)
    from training.train import TrainConfig

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    defaults = {}
    if known.config:
        try:
            with open(known.config, "rb") as f:
                defaults = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            usage_error("vae-train", f"--config {known.config}: {exc}")
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(defaults) - names)
        if unknown:
            usage_error("vae-train", f"{known.config}: unknown keys {unknown}")
    args = vars(parser(defaults).parse_args(argv))
    args.pop("config")
    if args["data"] in ("npy", "images") and not args["data_path"]:
        usage_error("vae-train", f"--data {args['data']} needs --data-path")
    return TrainConfig(**args)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    from training.data import load_dataset
    from training.train import train

    t0 = time.perf_counter()
    try:
        data = load_dataset(cfg.data, cfg.data_path)
    except (OSError, ValueError) as exc:
        usage_error("vae-train", f"--data {cfg.data}: {exc}")
    payload = train(cfg, data)
    if payload:
        m = payload["metrics"]
        print(f"wrote {cfg.out}: held-out -ELBO {m['heldout_neg_elbo']:.2f} nats "
              f"(recon {m['heldout_recon']:.2f}, KL {m['heldout_kl']:.2f}), "
              f"IWAE NLL {m['heldout_nll_iwae']:.2f}, active units {m['active_units']}"
              + (f", 5-NN {m['knn5_accuracy']:.3f}" if "knn5_accuracy" in m else "")
              + f" in {time.perf_counter() - t0:.1f} s (epochs {m['train_seconds']:.1f} s; "
              "the rest: data, feature network, final evaluation)")

