"""`make beta-sweep`: the embedded digits model trained at several beta, one table and one figure.

beta weighs the KL term of the loss (beta > 1: a beta-VAE). Per beta, from each run's own
held-out evaluation (training/evaluate.py): reconstruction and KL (nats), active units, 5-NN
accuracy on mu, interpolation smoothness, and how much the posteriors of same-class pairs
overlap against different-class pairs (mean Bhattacharyya coefficient and distance).

    python -m training.beta_sweep --betas 0.25,0.5,1,2,4,8 --out runs/beta \
        --figure docs/images/beta_sweep.png
"""

from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import fields
from pathlib import Path

from training.train import TrainConfig, train

COLUMNS = [("beta", "β", "{:g}"), ("heldout_recon", "reconstruction", "{:.2f}"),
           ("heldout_kl", "KL", "{:.2f}"), ("active_units", "active units", "{:d}"),
           ("knn5_accuracy", "5-NN on μ", "{:.1%}"), ("interp_smoothness", "smoothness",
                                                      "{:.3f}"),
           ("overlap_same_class", "overlap same class", "{:.3f}"),
           ("overlap_other_class", "overlap other class", "{:.3f}"),
           ("bhattacharyya_same_class", "D_B same", "{:.2f}"),
           ("bhattacharyya_other_class", "D_B other", "{:.2f}")]


def sweep(betas: list[float], out: Path, config: Path, epochs: int | None = None,
          threads: int | None = None) -> list[dict]:
    base = tomllib.loads(config.read_text())
    names = {f.name for f in fields(TrainConfig)}
    rows = []
    for beta in betas:
        cfg = TrainConfig(**{k: v for k, v in base.items() if k in names})
        cfg.beta, cfg.quiet = beta, True
        cfg.epochs = epochs or cfg.epochs
        cfg.threads = threads or cfg.threads
        cfg.out = str(out / f"beta-{beta:g}" / "checkpoint.pt")
        cfg.feature_net = str(out / "features.pt")  # trained by the first run, reused after
        metrics = train(cfg)["metrics"]
        rows.append({"beta": beta, **{k: metrics.get(k) for k, _, _ in COLUMNS[1:]}})
        print(json.dumps(rows[-1]), flush=True)
    (out / "beta_sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    head = "| " + " | ".join(t for _, t, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join("–" if r.get(k) is None else f.format(r[k])
                                       for k, _, f in COLUMNS) + " |")
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = [r["beta"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    axes[0].plot(b, [r["heldout_recon"] for r in rows], "o-", label="reconstruction")
    axes[0].plot(b, [r["heldout_kl"] for r in rows], "s-", label="KL")
    axes[0].set_ylabel("nats per item")
    axes[1].plot(b, [r["active_units"] for r in rows], "o-")
    axes[1].set_ylabel("active units")
    axes[2].plot(b, [r["knn5_accuracy"] for r in rows], "o-")
    axes[2].set_ylabel("5-NN accuracy on μ")
    axes[3].plot(b, [r["bhattacharyya_same_class"] for r in rows], "o-", label="same class")
    axes[3].plot(b, [r["bhattacharyya_other_class"] for r in rows], "s-", label="other class")
    axes[3].set_ylabel("mean Bhattacharyya distance")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("β")
    axes[0].legend()
    axes[3].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--betas", default="0.25,0.5,1,2,4,8")
    p.add_argument("--config", type=Path, default=Path("configs/digits.toml"))
    p.add_argument("--epochs", type=int, default=None, help="default: the config's")
    p.add_argument("--threads", type=int, default=None, help="torch threads; default: the config's")
    p.add_argument("--out", type=Path, default=Path("runs/beta"))
    p.add_argument("--figure", type=Path, default=Path("docs/images/beta_sweep.png"))
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = sweep([float(v) for v in a.betas.split(",")], a.out, a.config, a.epochs,
                 a.threads)
    text = table(rows)
    (a.out / "beta_sweep.md").write_text(text + "\n")
    figure(rows, a.figure)
    print(text)


if __name__ == "__main__":
    main()
