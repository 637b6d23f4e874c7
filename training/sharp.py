"""Plain vs perceptual vs adversarial vs both on MNIST-10k: four trainings, one table, pictures.

    python -m training.sharp --out runs/sharp            # `make sharp-mnist` (about an hour)
    python -m training.sharp --only plain,adversarial --epochs-scale 0.1   # a quick look

Each variant starts from configs/mnist.toml (same data split, seed, architecture) and gets the
epochs that fit 12 minutes on 2 cores (a 15-minute budget, 20 % margin) at its own cost per
epoch; all four share one feature network (trained first, reused), so their feature-FIDs are
measured in the same space.
Every run keeps its last weights (`--select last`): the best held-out -ELBO would pick the
epoch before the sharpening terms had their say.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from training.data import default_data_path  # noqa: E402

CONFIG = "configs/mnist.toml"
# name -> (flags, epochs): epochs from the measured seconds per epoch of configs/mnist.toml
# (bf16, SiLU; 2026-11-30, --epochs-scale 0.08 on a 2-core x86-64 VM: plain 2.9, perceptual 5.0,
# adversarial 3.0 before its start and 6.2 after, both 7.5, each run ~27 s of set-up and final
# evaluation) so that each run stays under 12 minutes, 20 % inside a 15-minute budget
VARIANTS: dict[str, tuple[list[str], int]] = {
    "plain": ([], 180),
    "perceptual": (["--perceptual-weight", "0.03"], 125),
    "adversarial": (["--adversarial-weight", "10"], 110),
    "both": (["--perceptual-weight", "0.03", "--adversarial-weight", "10"], 85),
}
COLUMNS = [("heldout_neg_elbo", "held-out −ELBO", "{:.2f}"),
           ("heldout_nll_iwae", "IWAE NLL", "{:.2f}"),
           ("fid_samples", "feature-FID samples", "{:.1f}"),
           ("fid_recon", "feature-FID recon", "{:.1f}"),
           ("edge_ratio_samples", "edge ratio samples", "{:.3f}"),
           ("edge_ratio_recon", "edge ratio recon", "{:.3f}"),
           ("knn5_accuracy", "5-NN", "{:.3f}"),
           ("epochs", "epochs", "{}"),
           ("wall_seconds", "wall time", "{:.0f} s")]


def run_variant(name: str, out: Path, features: Path, scale: float, data_path: str) -> dict:
    flags, epochs = VARIANTS[name]
    ckpt = out / name / "checkpoint.pt"
    cmd = [sys.executable, "-m", "training", "--config", CONFIG, "--data-path", data_path,
           "--epochs", str(max(1, round(epochs * scale))), "--select", "last",
           "--feature-net", str(features), "--out", str(ckpt), *flags]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    metrics = json.loads((ckpt.parent / "metrics.json").read_text())
    metrics["wall_seconds"] = time.perf_counter() - t0  # process start to exit
    (ckpt.parent / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def table(results: dict[str, dict]) -> str:
    plain = results.get("plain")
    head = "| variant | " + " | ".join(c[1] for c in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, m in results.items():
        cells = [fmt.format(m[key]) for key, _, fmt in COLUMNS]
        if plain is not None and name != "plain":  # the trade-off against plain, in place
            cells[0] += f" ({m['heldout_neg_elbo'] - plain['heldout_neg_elbo']:+.2f})"
            cells[2] += f" ({100 * (m['fid_samples'] / plain['fid_samples'] - 1):+.0f} %)"
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


@torch.no_grad()
def pictures(out: Path, names: list[str], figures: Path, data_path: str) -> None:
    """Samples (same z for every variant) and reconstructions of the same held-out digits."""
    from training.data import load_dataset
    from training.model import load_checkpoint

    ds = load_dataset("mnist", data_path)
    held = torch.from_numpy(ds.x[ds.heldout_idx[:8]])
    models = {n: load_checkpoint(out / n / "checkpoint.pt")[0] for n in names}
    z = torch.randn(16, next(iter(models.values())).cfg.latent_dim,
                    generator=torch.Generator().manual_seed(0))
    figures.mkdir(parents=True, exist_ok=True)
    for kind in ("samples", "reconstructions"):
        fig, axes = plt.subplots(1, len(names) + (kind == "reconstructions"),
                                 figsize=(3.2 * (len(names) + 1), 3.6), squeeze=False)
        panels = [("held-out", held.numpy())] if kind == "reconstructions" else []
        for n, m in models.items():
            imgs = m.decode(z) if kind == "samples" else m.decode(m.encode(held)[0])
            panels.append((n, imgs.numpy()))
        for ax, (title, imgs) in zip(axes[0], panels, strict=True):
            cols = 4
            h, w = imgs.shape[2:]
            grid = imgs[:, 0].reshape(-1, cols, h, w).transpose(0, 2, 1, 3).reshape(-1, cols * w)
            ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(figures / f"{kind}.png", dpi=90)
        plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.sharp",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/sharp")
    p.add_argument("--data-path", default=str(default_data_path("mnist")),
                   help="the MNIST IDX folder")
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="for quick looks")
    p.add_argument("--figures", default="docs/images/sharp")
    p.add_argument("--skip-training", action="store_true", help="table and pictures only")
    a = p.parse_args(argv)
    out, names = Path(a.out), [n for n in a.only.split(",") if n]
    features = out / "features.pt"
    if not features.exists():
        subprocess.run([sys.executable, "-m", "training.features", "--data", "mnist",
                        "--data-path", a.data_path, "--out", str(features)], check=True)
    results = {}
    for n in names:
        results[n] = (json.loads((out / n / "metrics.json").read_text()) if a.skip_training
                      else run_variant(n, out, features, a.epochs_scale, a.data_path))
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    print(text)
    pictures(out, names, Path(a.figures), a.data_path)
    print(f"pictures in {a.figures}")
    if any(m.get("wall_seconds", 0) > 12 * 60 for m in results.values()):
        print("WARNING: a training took longer than 12 minutes (the budget's 20 % margin)",
              file=sys.stderr)


if __name__ == "__main__":
    main()
