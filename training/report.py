"""Pictures of a trained VAE and one markdown page showing them with its metrics.

    python -m training.report --checkpoint runs/digits/checkpoint.pt --out runs/digits/report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.data import load_dataset  # noqa: E402
from training.evaluate import class_overlap  # noqa: E402
from training.model import load_checkpoint  # noqa: E402


def _grid(imgs: np.ndarray, rows: int, path: Path, title: str, row_labels=None) -> None:
    """imgs [N, C, H, W] in [0, 1], drawn row-major in `rows` rows."""
    n = len(imgs)
    cols = -(-n // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = imgs[i].transpose(1, 2, 0)
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_title(label, fontsize=6, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    cos = (a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) *
                                           b.norm(dim=-1, keepdim=True)).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1, 1))
    so = torch.sin(omega).clamp_min(1e-6)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so


@torch.no_grad()
def make_report(checkpoint: str | Path, out: str | Path, seed: int = 0) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, payload = load_checkpoint(checkpoint)
    cfg = payload["train_config"]
    data = load_dataset(cfg["data"], cfg.get("data_path"))
    held = torch.from_numpy(data.x[payload["data"]["heldout_idx"]])
    labels = None if data.labels is None else data.labels[payload["data"]["heldout_idx"]]
    gen = torch.Generator().manual_seed(seed)
    z_dim = model.cfg.latent_dim
    mu, logvar = model.encode(held)

    hist = payload["history"]
    # what the evaluations during training ran on: the held-out split, or a validation split
    # carved from the training split (train_config.val_items)
    ev, ev_name = ("val", "validation") if cfg.get("val_items") else ("heldout", "held-out")
    ev_labels = labels if ev == "heldout" or data.labels is None else \
        data.labels[data.train_idx[-cfg["val_items"]:]]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key in zip(axes, ["loss", "recon", "kl"], strict=True):
        ep = [h["epoch"] for h in hist]
        ax.plot(ep, [h[f"train_{key}"] for h in hist], label="train")
        held_key = f"{ev}_neg_elbo" if key == "loss" else f"{ev}_{key}"
        evaluated = [h for h in hist if held_key in h]  # every eval_every epochs
        ax.plot([h["epoch"] for h in evaluated], [h[held_key] for h in evaluated],
                label=ev_name)
        ax.set(title={"loss": "objective / -ELBO", "recon": "reconstruction",
                      "kl": "KL"}[key], xlabel="epoch", ylabel="nats per item")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=100)
    plt.close(fig)

    _grid(model.decode(torch.randn(64, z_dim, generator=gen)).numpy(), 8, out / "samples.png",
          "samples: decoder mean of z ~ N(0, I)")
    x16 = held[:16]
    recon = model.decode(mu[:16]).numpy()
    _grid(np.concatenate([x16.numpy(), recon]), 2, out / "reconstructions.png",
          "top: held-out originals; bottom: decoded mu")

    t = torch.linspace(0, 1, 10)[:, None]
    for name, fn in [("lerp", lambda a, b: (1 - t) * a + t * b), ("slerp", lambda a, b:
                                                                  _slerp(a, b, t))]:
        rows = [model.decode(fn(mu[2 * i], mu[2 * i + 1])).numpy() for i in range(4)]
        _grid(np.concatenate(rows), 4, out / f"interp_{name}.png",
              f"{name} between mu of held-out pairs")

    var = mu.var(dim=0)
    units = var.argsort(descending=True)[: min(8, z_dim)]
    values = torch.linspace(-3, 3, 9)
    rows = []
    for u in units:
        z = mu[0].repeat(len(values), 1)
        z[:, u] = values
        rows.append(model.decode(z).numpy())
    _grid(np.concatenate(rows), len(units), out / "traversals.png",
          "latent traversals (-3..3) of the most active units",
          [f"unit {int(u)}" for u in units])

    m = mu.numpy()
    if z_dim > 2:
        centered = m - m.mean(0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        pts, proj = centered @ vt[:2].T, "PCA"
    else:
        pts, proj = m[:, :2], "identity"
    fig, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=labels, cmap="tab10", s=4)
    if labels is not None:
        fig.colorbar(sc, ax=ax, label="label")
    ax.set(title=f"held-out mu, {proj} to 2-D", xlabel="1", ylabel="2")
    fig.savefig(out / "latent_map.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(torch.exp(0.5 * logvar).flatten().numpy(), bins=50)
    ax.set(title="posterior sigma, all held-out items and units", xlabel="sigma")
    fig.savefig(out / "sigma_hist.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    _organization(hist, payload["state"].get("snapshots", {}), ev_labels, out, ev, ev_name)

    metrics = dict(payload["metrics"])
    if labels is not None:  # also for checkpoints written before training recorded it
        metrics.update(class_overlap(model, held, labels))
    lines = [f"# VAE report: {Path(checkpoint)}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in metrics.items()]
    lines += ["", "```json", json.dumps(payload["model_config"]), "```", ""]
    for png in ["loss_curves", "organization", "map_snapshots", "samples", "reconstructions",
                "interp_lerp", "interp_slerp", "traversals", "latent_map", "sigma_hist"]:
        if not (out / f"{png}.png").exists():
            continue
        lines += [f"## {png.replace('_', ' ')}", "", f"![{png}]({png}.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def _organization(hist: list[dict], snapshots: dict, labels: np.ndarray | None,
                  out: Path, ev: str = "heldout", ev_name: str = "held-out") -> None:
    """The latent space organizing during training: what each evaluation recorded, against
    epochs, and the latent map at six epochs on the same axes (one PCA, fitted on the last)."""
    rows = [h for h in hist if "mean_sigma" in h]
    if not rows:
        return  # a checkpoint from before these were recorded
    ep = [h["epoch"] for h in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    # with a moving average, the weights being trained (what the other panels describe);
    # the average trails them and starts out mostly initialization
    raw = "_raw" if f"{ev}_kl_raw" in rows[0] else ""
    axes[0].plot(ep, [h[f"{ev}_kl{raw}"] for h in rows], label="KL")
    axes[0].plot(ep, [h[f"{ev}_recon{raw}"] for h in rows], label="reconstruction")
    axes[0].set(title=f"{ev_name} terms (nats)", xlabel="epoch")
    axes[0].legend()
    kl = np.array([h["kl_per_dim"] for h in rows])
    axes[1].imshow(kl.T, aspect="auto", origin="lower", cmap="viridis",
                   extent=(ep[0], ep[-1], -0.5, kl.shape[1] - 0.5))
    axes[1].set(title="KL per latent dimension", xlabel="epoch", ylabel="dimension")
    axes[2].plot(ep, [h["active_units"] for h in rows], label="active units")
    axes[2].set(title="active units", xlabel="epoch")
    ax3 = axes[2].twinx()
    ax3.plot(ep, [h["mean_sigma"] for h in rows], color="tab:red")
    ax3.set_ylabel("mean σ", color="tab:red")
    if f"knn5_{ev}" in rows[0]:
        axes[3].plot(ep, [h[f"knn5_{ev}"] for h in rows], label=f"5-NN on μ ({ev_name})")
        axes[3].plot(ep, [h["silhouette"] for h in rows], label="silhouette of μ")
        axes[3].legend()
    axes[3].set(title="class structure", xlabel="epoch")
    fig.tight_layout()
    fig.savefig(out / "organization.png", dpi=100)
    plt.close(fig)
    if not snapshots:
        return
    epochs = sorted(snapshots, key=int)
    last = snapshots[epochs[-1]].numpy()
    mean = last.mean(0)
    _, _, vt = np.linalg.svd(last - mean, full_matrices=False)
    pts = {e: (snapshots[e].numpy() - mean) @ vt[:2].T for e in epochs}
    lim = np.abs(np.concatenate(list(pts.values()))).max() * 1.05
    fig, axes = plt.subplots(1, len(epochs), figsize=(3 * len(epochs), 3.2))
    for ax, e in zip(np.atleast_1d(axes), epochs, strict=True):
        c = None if labels is None else labels[: len(pts[e])]
        ax.scatter(pts[e][:, 0], pts[e][:, 1], c=c, cmap="tab10", s=3)
        ax.set(title=f"epoch {e}", xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[])
    fig.suptitle("held-out μ at six epochs, one PCA (fitted on the last)")
    fig.tight_layout()
    fig.savefig(out / "map_snapshots.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.report", description=__doc__)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    print(f"wrote {make_report(args.checkpoint, args.out)}")


if __name__ == "__main__":
    main()
